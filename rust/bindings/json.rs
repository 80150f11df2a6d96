//! Python values to JSON text and back, with no `json` module in between.
//!
//! The contract: a value is its JSON form, on every run. The encoder writes
//! the text jsonb gives back (object keys in jsonb's order, `-0.0` as
//! `0.0`, tuples as arrays), and the first run hands the caller that text
//! decoded, just as a replay decodes the saved text, so both see the same
//! types, key order and values. Floats are parsed exactly (`serde_json`'s
//! `float_roundtrip`): every finite float comes back bit for bit.
//!
//! Encoding is strict where `json.dumps` is lax, because a lax encoder would
//! make a replayed value differ from the original: NaN and Infinity are
//! refused (jsonb cannot hold them), dict keys must be strings (no silent
//! `1` -> `"1"`), integers must fit 64 bits (what decoding gives back), and
//! anything else (sets, bytes, datetimes, objects) is refused with the path
//! to the offending value and a hint.

use std::fmt::{self, Write as _};

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::ser::{CompactFormatter, Formatter};

use super::errors::{not_json, value_too_large};
use crate::engine::JsonText;

/// Deepest nesting accepted. Below `serde_json`'s decoding limit (128), so
/// whatever is saved can be read back; also stops self-containing values.
const MAX_DEPTH: usize = 100;

/// Why a value is not JSON, and where in it.
#[derive(Debug)]
pub(crate) struct NotJson {
    /// Path from the top value, innermost last: `["items"][2]`.
    path: Vec<Segment>,
    problem: String,
}

#[derive(Debug)]
enum Segment {
    Key(String),
    Index(usize),
}

impl fmt::Display for NotJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            return f.write_str(&self.problem);
        }
        f.write_str("value at ")?;
        for segment in self.path.iter().rev() {
            match segment {
                Segment::Key(key) => write!(f, "[{key:?}]")?,
                Segment::Index(i) => write!(f, "[{i}]")?,
            }
        }
        write!(f, " {}", self.problem)
    }
}

impl NotJson {
    fn new(problem: String) -> Self {
        NotJson {
            path: Vec::new(),
            problem,
        }
    }

    /// Adds the segment of the enclosing container (paths are built inside out).
    fn within(mut self, segment: Segment) -> Self {
        self.path.push(segment);
        self
    }
}

/// Encodes a Python value as JSON text of at most `limit` bytes. `what`
/// names the value in errors ("result of step \"fetch\"").
pub(crate) fn encode(value: &Bound<'_, PyAny>, what: &str, limit: usize) -> PyResult<JsonText> {
    let mut out = Vec::with_capacity(64);
    write_value(&mut out, value, 0).map_err(|e| not_json(what, &e))?;
    if out.len() > limit {
        return Err(value_too_large(what, out.len(), limit));
    }
    // Every byte written comes from valid UTF-8 strings or ASCII number text.
    String::from_utf8(out)
        .map(JsonText)
        .map_err(|_| not_json(what, &NotJson::new("is not valid UTF-8".to_owned())))
}

fn write_value(out: &mut Vec<u8>, value: &Bound<'_, PyAny>, depth: usize) -> Result<(), NotJson> {
    if depth > MAX_DEPTH {
        return Err(NotJson::new(format!(
            "is nested more than {MAX_DEPTH} levels deep (does a container hold itself?)"
        )));
    }
    if value.is_none() {
        out.extend_from_slice(b"null");
    } else if let Ok(flag) = value.cast::<PyBool>() {
        out.extend_from_slice(if flag.is_true() { b"true" } else { b"false" });
    } else if let Ok(int) = value.cast::<PyInt>() {
        write_int(out, int)?;
    } else if let Ok(float) = value.cast::<PyFloat>() {
        write_float(out, float.value())?;
    } else if let Ok(text) = value.cast::<PyString>() {
        write_str(out, text)?;
    } else if let Ok(list) = value.cast::<PyList>() {
        write_array(out, list.iter(), depth)?;
    } else if let Ok(tuple) = value.cast::<PyTuple>() {
        write_array(out, tuple.iter(), depth)?;
    } else if let Ok(dict) = value.cast::<PyDict>() {
        write_object(out, dict, depth)?;
    } else {
        return Err(NotJson::new(unsupported(value)));
    }
    Ok(())
}

fn write_int(out: &mut Vec<u8>, int: &Bound<'_, PyInt>) -> Result<(), NotJson> {
    if let Ok(n) = int.extract::<i64>() {
        let _ = write!(Utf8Sink(out), "{n}");
    } else if let Ok(n) = int.extract::<u64>() {
        let _ = write!(Utf8Sink(out), "{n}");
    } else {
        return Err(NotJson::new(
            "is an integer outside the 64-bit range, which would not read back as the same \
             int; store it as a string"
                .to_owned(),
        ));
    }
    Ok(())
}

fn write_float(out: &mut Vec<u8>, x: f64) -> Result<(), NotJson> {
    if !x.is_finite() {
        return Err(NotJson::new(format!(
            "is the float {}, which JSON cannot represent; use None or a string",
            if x.is_nan() {
                "nan"
            } else if x > 0.0 {
                "inf"
            } else {
                "-inf"
            }
        )));
    }
    // jsonb's numeric has no negative zero: write what it will give back.
    if x == 0.0 {
        out.extend_from_slice(b"0.0");
    // jsonb keeps a number's decimal scale but drops exponents: "1e16" would
    // read back as the int 10000000000000000. Whole floats that large are
    // written out with a ".0" so they stay floats.
    } else if x.abs() >= 1e16 && x.fract() == 0.0 {
        let _ = write!(Utf8Sink(out), "{x:.1}");
    } else {
        let _ = CompactFormatter.write_f64(out, x);
    }
    Ok(())
}

fn write_str(out: &mut Vec<u8>, text: &Bound<'_, PyString>) -> Result<(), NotJson> {
    let _ = serde_json::to_writer(&mut *out, checked_str(text)?);
    Ok(())
}

/// The text of a Python string that jsonb can store.
fn checked_str<'a>(text: &'a Bound<'_, PyString>) -> Result<&'a str, NotJson> {
    let text = text
        .to_str()
        .map_err(|_| NotJson::new("is a string with a lone surrogate, which is not valid UTF-8".to_owned()))?;
    if text.contains('\0') {
        // Postgres jsonb cannot store U+0000.
        return Err(NotJson::new(
            "is a string containing a NUL character (U+0000), which Postgres cannot store".to_owned(),
        ));
    }
    Ok(text)
}

fn write_array<'py>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    depth: usize,
) -> Result<(), NotJson> {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_value(out, &item, depth + 1).map_err(|e| e.within(Segment::Index(i)))?;
    }
    out.push(b']');
    Ok(())
}

/// Writes a dict with its keys in jsonb's order (shorter keys first, then
/// by bytes), the order Postgres gives them back in: a value then reads
/// the same on the first run as on every replay.
fn write_object(out: &mut Vec<u8>, dict: &Bound<'_, PyDict>, depth: usize) -> Result<(), NotJson> {
    let mut entries = Vec::with_capacity(dict.len());
    for (key, item) in dict.iter() {
        let key = match key.cast_into::<PyString>() {
            Ok(key) => key,
            Err(err) => {
                let key = err.into_inner();
                let shown = key.repr().map_or_else(|_| "?".to_owned(), |r| r.to_string());
                return Err(NotJson::new(format!(
                    "has the key {shown} of type {}; JSON object keys must be strings (convert it with str())",
                    type_name(&key)
                )));
            }
        };
        entries.push((key, item));
    }
    let mut keys = Vec::with_capacity(entries.len());
    for (key, _) in &entries {
        keys.push(checked_str(key)?);
    }
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_unstable_by(|&a, &b| jsonb_key_order(keys[a], keys[b]));
    out.push(b'{');
    for (n, &i) in order.iter().enumerate() {
        if n > 0 {
            if keys[order[n - 1]] == keys[i] {
                // Two str subclasses that compare unequal yet spell the same key.
                return Err(NotJson::new(format!("has the key {:?} twice", keys[i])));
            }
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, keys[i]);
        out.push(b':');
        let segment = || Segment::Key(keys[i].to_owned());
        write_value(out, &entries[i].1, depth + 1).map_err(|e| e.within(segment()))?;
    }
    out.push(b'}');
    Ok(())
}

/// How jsonb orders object keys: by length in bytes, then bytewise.
fn jsonb_key_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// The message for a value of a type JSON has no form for, with a fix.
fn unsupported(value: &Bound<'_, PyAny>) -> String {
    let name = type_name(value);
    let hint = match name.as_str() {
        "set" | "frozenset" => "convert it to a list",
        "bytes" | "bytearray" | "memoryview" => "decode it to str, or base64-encode it",
        "datetime" | "date" | "time" => "convert it with .isoformat()",
        "Decimal" => "convert it with str() or float()",
        "UUID" => "convert it with str()",
        _ => "return None, bool, int, float, str, list or dict (a dataclass: dataclasses.asdict())",
    };
    format!("is a {name}, which is not JSON; {hint}")
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map_or_else(|_| "object".to_owned(), |n| n.to_string())
}

/// `fmt::Write` over a byte buffer (numbers are ASCII).
struct Utf8Sink<'a>(&'a mut Vec<u8>);

impl fmt::Write for Utf8Sink<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Decodes JSON text (as saved by Postgres) into Python values.
pub(crate) fn decode<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = PyValue(py)
        .deserialize(&mut deserializer)
        .and_then(|v| deserializer.end().map(|()| v))
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("saved JSON could not be read: {e}")))?;
    Ok(value)
}

/// Most of a value's text that `unreadable` shows.
const UNREADABLE_SHOWN: usize = 1000;

/// What a reader shows of saved JSON that `decode` refuses: its text, cut
/// (at a character boundary) after `UNREADABLE_SHOWN` bytes, saying so.
pub(crate) fn unreadable(text: &str) -> String {
    if text.len() <= UNREADABLE_SHOWN {
        return text.to_owned();
    }
    let mut end = UNREADABLE_SHOWN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// JSON text that becomes its Python value when handed to Python (decoded
/// on the event loop's thread, where the awaitable resolves).
pub(crate) struct Decoded(pub(crate) JsonText);

impl<'py> IntoPyObject<'py> for Decoded {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        decode(py, self.0.as_str())
    }
}

/// Builds Python objects straight from the parser's events.
#[derive(Clone, Copy)]
struct PyValue<'py>(Python<'py>);

fn py_err<E: de::Error>(err: &PyErr) -> E {
    E::custom(err.to_string())
}

impl<'de, 'py> DeserializeSeed<'de> for PyValue<'py> {
    type Value = Bound<'py, PyAny>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, 'py> Visitor<'de> for PyValue<'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.0.None().into_bound(self.0))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(PyBool::new(self.0, v).to_owned().into_any())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        let Ok(int) = v.into_pyobject(self.0);
        Ok(int.into_any())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        let Ok(int) = v.into_pyobject(self.0);
        Ok(int.into_any())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(PyFloat::new(self.0, v).into_any())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(PyString::new(self.0, v).into_any())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let list = PyList::empty(self.0);
        while let Some(item) = seq.next_element_seed(self)? {
            list.append(item).map_err(|e| py_err(&e))?;
        }
        Ok(list.into_any())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let dict = PyDict::new(self.0);
        while let Some(key) = map.next_key_seed(self)? {
            let value = map.next_value_seed(self)?;
            dict.set_item(key, value).map_err(|e| py_err(&e))?;
        }
        Ok(dict.into_any())
    }
}
