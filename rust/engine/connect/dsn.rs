//! The parts of a DSN tokio-postgres does not read: `sslmode` values past
//! `require`, and `sslrootcert`. They are taken out of the DSN (URL query or
//! key=value form) before tokio-postgres parses the rest.

/// The parameters read here, never by tokio-postgres.
pub(super) const OURS: [&str; 2] = ["sslmode", "sslrootcert"];

/// The DSN without our parameters, and their values (in `OURS` order).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Split {
    pub rest: String,
    pub values: [Option<String>; 2],
}

/// Takes `OURS` out of `dsn`. A DSN this cannot read is returned whole,
/// for tokio-postgres to report what is wrong with it.
pub(super) fn split(dsn: &str) -> Split {
    let whole = || Split {
        rest: dsn.to_owned(),
        values: [None, None],
    };
    let is_url = ["postgres://", "postgresql://"].iter().any(|p| dsn.starts_with(p));
    let found = if is_url { split_url(dsn) } else { split_pairs(dsn) };
    found.unwrap_or_else(whole)
}

fn slot(key: &str) -> Option<usize> {
    OURS.iter().position(|ours| *ours == key)
}

/// URL form: parameters of the query (after the first `?` past the
/// credentials, as tokio-postgres reads it), percent-decoded.
fn split_url(dsn: &str) -> Option<Split> {
    let after_credentials = dsn.find('@').unwrap_or(0);
    let Some(question) = dsn[after_credentials..].find('?').map(|i| i + after_credentials) else {
        return Some(Split {
            rest: dsn.to_owned(),
            values: [None, None],
        });
    };
    let mut values = [None, None];
    let mut kept = Vec::new();
    for pair in dsn[question + 1..].split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match slot(&decode(key)?) {
            Some(i) => values[i] = Some(decode(value)?),
            None => kept.push(pair),
        }
    }
    let mut rest = dsn[..question].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Some(Split { rest, values })
}

/// Percent-decoding of a URL component; None if not UTF-8 or malformed.
fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// key=value form, as libpq reads it: spaces around `=` allowed, values
/// single-quoted or bare, backslash escapes in both.
fn split_pairs(dsn: &str) -> Option<Split> {
    let mut values = [None, None];
    let mut rest = String::new();
    let mut chars = dsn.char_indices().peekable();
    let mut copied_to = 0;
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else { break };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        chars.next_if(|(_, c)| *c == '=')?;
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next()? {
                    (_, '\'') => break,
                    (_, '\\') => value.push(chars.next()?.1),
                    (_, c) => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                value.push(if c == '\\' { chars.next()?.1 } else { c });
            }
        }
        let end = chars.peek().map_or(dsn.len(), |(i, _)| *i);
        if let Some(i) = slot(&key) {
            rest.push_str(&dsn[copied_to..start]);
            copied_to = end;
            values[i] = Some(value);
        }
    }
    rest.push_str(&dsn[copied_to..]);
    Some(Split { rest, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(mode: Option<&str>, root: Option<&str>) -> [Option<String>; 2] {
        [mode.map(str::to_owned), root.map(str::to_owned)]
    }

    #[test]
    fn url_parameters_are_taken_out() {
        let s =
            split("postgresql://u:p@h:5432/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca%201.pem");
        assert_eq!(s.rest, "postgresql://u:p@h:5432/db?application_name=x");
        assert_eq!(s.values, values(Some("verify-full"), Some("/tmp/ca 1.pem")));
        let s = split("postgres://h/db?sslmode=require");
        assert_eq!(s.rest, "postgres://h/db");
        assert_eq!(s.values, values(Some("require"), None));
    }

    #[test]
    fn a_question_mark_in_the_password_is_not_the_query() {
        let s = split("postgresql://u:p?ss@h/db?sslmode=disable");
        assert_eq!(s.rest, "postgresql://u:p?ss@h/db");
        assert_eq!(s.values, values(Some("disable"), None));
        let s = split("postgresql://u:p?ss@h/db");
        assert_eq!(s.rest, "postgresql://u:p?ss@h/db");
    }

    #[test]
    fn key_value_pairs_are_taken_out() {
        let s = split("host=h sslmode = verify-ca  dbname='my db' sslrootcert='/a b/c\\'d.pem' user=x");
        assert_eq!(s.rest, "host=h   dbname='my db'  user=x");
        assert_eq!(s.values, values(Some("verify-ca"), Some("/a b/c'd.pem")));
        let s = split("host=h");
        assert_eq!(s.rest, "host=h");
        assert_eq!(s.values, values(None, None));
    }

    #[test]
    fn unreadable_dsns_are_left_whole() {
        for dsn in [
            "host=h sslmode",
            "host='unterminated sslmode=require",
            "postgresql://h/db?sslmode=%zz",
        ] {
            let s = split(dsn);
            assert_eq!(s.rest, dsn);
            assert_eq!(s.values, values(None, None));
        }
    }
}
