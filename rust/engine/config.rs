//! Connection settings and the validation of everything a user names:
//! the DSN, the schema, workflow and step names.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::config::Host;

use super::error::EngineError;
use super::{dsn, tls};

/// Startup options of every connection of the engine.
///
/// Every statement of ours is parameterized and finds its rows through an
/// index. Left to itself Postgres re-plans the checkpoint statement on every
/// call (0.23 ms, most of a commit), so plans are made once per connection
/// (`force_generic_plan`: 1600 -> 2300 flushes/s). A plan made while the
/// table is still small would scan it whole, and keep doing so as it grows
/// (seen: throughput falling by half within 9000 steps of a fresh schema,
/// one sequential scan per flush, foreign-key checks included); with
/// `enable_seqscan=off` the index path is taken whatever the table's size.
/// That setting makes a sequential scan that remains (of the small `owner`
/// table) cost 10^10, past `jit_above_cost`: JIT then compiled short
/// statements for half a second each (seen: reading one run took 700 ms).
/// Nothing durable runs is long enough to gain from JIT: `jit=off`.
const PLANNER_OPTIONS: &str = "-c plan_cache_mode=force_generic_plan -c enable_seqscan=off -c jit=off";

/// Longest workflow or step name, in bytes (the schema checks it too).
pub const MAX_NAME_BYTES: usize = 255;

/// Bounds of the options: what makes sense, and keeps every deadline
/// computed from them representable (no overflow, no panic). Each is
/// defined here alone: the bindings check by them and export them to the
/// Python package (`durable._core`), which checks by them too.
pub const MIN_CONNECTIONS: usize = 2;
pub const MAX_CONNECTIONS: usize = 10_000;
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(3600);
pub const MIN_LEASE: Duration = Duration::from_secs(1);
pub const MAX_LEASE: Duration = Duration::from_secs(86_400);
pub const MAX_RECONNECT_TIMEOUT: Duration = Duration::from_secs(86_400);
pub const MAX_SESSION_GRACE: Duration = Duration::from_secs(60);
/// The largest value jsonb holds, in bytes: `max_value_bytes` may not promise more.
pub const MAX_VALUE_BYTES: i64 = 268_435_455;
/// The longest duration an option gives (a deadline, a delay, a sleep, how
/// long a schedule is remembered): a century.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);
/// The longest wait for something to happen (a busy workflow to be free, a
/// message, a run's end, an event): a year.
pub const MAX_WAIT: Duration = Duration::from_secs(365 * 86_400);
/// The longest period of a queue's rate limit: a year, leap or not.
pub const MAX_RATE_PERIOD: Duration = Duration::from_secs(366 * 86_400);

/// TCP keepalive settings used when the DSN sets none: a peer that vanished
/// (a crashed host, a cut network) is noticed within about 25 seconds.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVES_RETRIES: u32 = 3;
/// libpq's default keepalive idle time, which tokio-postgres also uses.
const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// How the engine connects and where it keeps its tables.
#[derive(Debug, Clone)]
pub struct Options {
    /// Postgres schema holding durable's tables.
    pub schema: String,
    /// Largest number of pooled connections (the checkpoint writer holds one of them).
    pub max_connections: usize,
    /// Used when the DSN does not set `connect_timeout` itself. Bounds the
    /// whole connection setup (TCP, TLS, login), not only the TCP connect.
    pub connect_timeout: Duration,
    /// How long a lease outlives the last heartbeat of its owner. Only a hung
    /// or cut-off process needs it to run out: a dead one is seen at once.
    pub lease: Duration,
    /// How long writes keep retrying through a lost connection or a database
    /// restart before failing; also the longest wait for any one answer.
    pub reconnect_timeout: Duration,
    /// How long others wait for this process to re-register when its
    /// liveness session drops, before they take its workflows over.
    pub session_grace: Duration,
    /// This machine's name, recorded with the owner row (for humans).
    pub host: String,
    /// Bring the schema up to date (true), or only check that it is
    /// (false: `SchemaNotCurrent` otherwise, and nothing is created).
    pub migrate: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            schema: "durable".to_owned(),
            max_connections: 10,
            connect_timeout: Duration::from_secs(10),
            lease: Duration::from_secs(30),
            reconnect_timeout: Duration::from_secs(30),
            session_grace: Duration::from_millis(500),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map_or_else(|_| "unknown".to_owned(), |name| name.trim().to_owned()),
            migrate: true,
        }
    }
}

impl Options {
    /// Refuses options out of their bounds, naming the option and the bounds.
    pub fn validate(&self) -> Result<(), EngineError> {
        validate_schema(&self.schema)?;
        if !(MIN_CONNECTIONS..=MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(EngineError::InvalidOption(format!(
                "max_connections must be from {MIN_CONNECTIONS} (the checkpoint writer keeps one) to {MAX_CONNECTIONS}, not {}",
                self.max_connections
            )));
        }
        let durations = [
            (
                "connect_timeout",
                self.connect_timeout,
                Duration::from_millis(1),
                MAX_CONNECT_TIMEOUT,
            ),
            ("lease", self.lease, MIN_LEASE, MAX_LEASE),
            (
                "reconnect_timeout",
                self.reconnect_timeout,
                Duration::from_millis(1),
                MAX_RECONNECT_TIMEOUT,
            ),
            ("session_grace", self.session_grace, Duration::ZERO, MAX_SESSION_GRACE),
        ];
        for (what, value, low, high) in durations {
            if !(low..=high).contains(&value) {
                return Err(EngineError::InvalidOption(format!(
                    "{what} must be from {} to {} seconds, not {}",
                    low.as_secs_f64(),
                    high.as_secs_f64(),
                    value.as_secs_f64()
                )));
            }
        }
        Ok(())
    }
}

/// A schema name as an SQL identifier: quoted, so that names that are SQL
/// keywords (`user`, `order`) work. `validate_schema` admits no quote.
pub(crate) fn quote(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// A parsed DSN: the driver's settings and the TLS connector they go with.
#[derive(Clone)]
pub(crate) struct Target {
    pub config: tokio_postgres::Config,
    pub tls: tls::Connector,
}

/// Parses a DSN (URL or key=value form), filling what it leaves out from
/// the standard `PG*` environment variables. The error never repeats the
/// DSN, which may hold a password.
pub(crate) fn parse_dsn(dsn: &str, options: &Options) -> Result<Target, EngineError> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let (config, plan) = parse_dsn_with(dsn, options, |name| std::env::var(name).ok(), home.as_deref())?;
    let tls = tls::connector(&plan)?;
    Ok(Target { config, tls })
}

/// `parse_dsn`, with the environment and the home directory given (for tests).
pub(crate) fn parse_dsn_with(
    dsn: &str,
    options: &Options,
    env: impl Fn(&str) -> Option<String>,
    home: Option<&Path>,
) -> Result<(tokio_postgres::Config, tls::Plan), EngineError> {
    if dsn.trim().is_empty() {
        return Err(EngineError::InvalidDsn("the URL is empty".to_owned()));
    }
    // Set but empty counts as unset.
    let env = |name: &str| env(name).filter(|value| !value.is_empty());
    let split = dsn::split(dsn);
    // A URL with nothing in it takes everything from the environment
    // (tokio-postgres refuses it).
    let mut config = if ["postgres://", "postgresql://"].contains(&split.rest.as_str()) {
        tokio_postgres::Config::new()
    } else {
        split
            .rest
            .parse()
            .map_err(|e: tokio_postgres::Error| EngineError::InvalidDsn(e.to_string()))?
    };
    fill_from_env(&mut config, &env)?;
    if config.get_hosts().is_empty() {
        return Err(EngineError::InvalidDsn(
            "no host given (add @host:port to the URL, or host=..., or set $PGHOST)".to_owned(),
        ));
    }
    let [mode, rootcert] = split.values;
    let mode = mode.or_else(|| env("PGSSLMODE"));
    let rootcert = rootcert.or_else(|| env("PGSSLROOTCERT"));
    let unix_only = config.get_hosts().iter().all(|host| !matches!(host, Host::Tcp(_)));
    let plan = if unix_only {
        // As in libpq: Postgres has no TLS on Unix sockets, sslmode does not
        // apply (but must still be one of its values).
        mode.as_deref().map(tls::SslMode::parse).transpose()?;
        tls::Plan {
            mode: tls::SslMode::Disable,
            check: tls::Check::Nothing,
            roots: None,
        }
    } else {
        tls::plan(mode.as_deref(), rootcert.as_deref(), home, Path::exists)?
    };
    config.ssl_mode(plan.mode.driver());
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.connect_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("durable");
    }
    if config.get_keepalives() && config.get_keepalives_idle() == DEFAULT_KEEPALIVES_IDLE {
        config.keepalives_idle(KEEPALIVES_IDLE);
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(KEEPALIVES_INTERVAL);
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(KEEPALIVES_RETRIES);
        }
    }
    let options = match config.get_options() {
        Some(given) => format!("{given} {PLANNER_OPTIONS}"),
        None => PLANNER_OPTIONS.to_owned(),
    };
    config.options(&options);
    Ok((config, plan))
}

/// `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, each for what
/// the DSN does not set (`PGSSLMODE` and `PGSSLROOTCERT`: see `parse_dsn_with`).
fn fill_from_env(
    config: &mut tokio_postgres::Config,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), EngineError> {
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        if let Some(hosts) = env("PGHOST") {
            for host in hosts.split(',') {
                config.host(host.trim());
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(ports) = env("PGPORT") {
            for port in ports.split(',') {
                let port = port.trim().parse().map_err(|_| {
                    let shown: String = port.chars().take(20).collect();
                    EngineError::InvalidDsn(format!("$PGPORT holds {shown:?}, not a port number"))
                })?;
                config.port(port);
            }
        }
    }
    if config.get_user().is_none() {
        if let Some(user) = env("PGUSER") {
            config.user(&user);
        }
    }
    if config.get_password().is_none() {
        if let Some(password) = env("PGPASSWORD") {
            config.password(password);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(dbname) = env("PGDATABASE") {
            config.dbname(&dbname);
        }
    }
    Ok(())
}

/// "host:port" for every host of the config, for error messages. Never includes credentials.
pub(crate) fn describe_target(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            // libpq rules: one port for all hosts, or one per host; 5432 when none is given.
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A schema name must be a plain lowercase identifier (spliced into
/// statements quoted, see `quote`).
pub fn validate_schema(schema: &str) -> Result<(), EngineError> {
    let mut chars = schema.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= 63 {
        Ok(())
    } else {
        Err(EngineError::InvalidSchema(schema.to_owned()))
    }
}

/// Checks a workflow's path: the root's name, then each child's down to
/// the workflow, each a name as `validate_name` wants it. A name is never
/// split: a root named `a/b` is the path `["a/b"]`, its child `c` the path
/// `["a/b", "c"]`.
pub fn validate_path<S: AsRef<str>>(path: &[S]) -> Result<(), EngineError> {
    if path.is_empty() {
        return Err(EngineError::InvalidOption(
            "a workflow's path needs at least one name: the root's, then each child's".to_owned(),
        ));
    }
    for name in path {
        validate_name("workflow", name.as_ref())?;
    }
    Ok(())
}

/// A workflow's path as messages show it: a root by its name (`"a/b"`), a
/// child by its names (`path ["a", "b"]`), so that the two never read alike.
pub fn show_path<S: AsRef<str>>(path: &[S]) -> String {
    let names: Vec<&str> = path.iter().map(AsRef::as_ref).collect();
    match names.as_slice() {
        [root] => format!("{root:?}"),
        names => format!("at path {names:?}"),
    }
}

/// Workflow, child and step names: non-empty, at most 255 bytes, no NUL
/// (Postgres text cannot hold one).
pub fn validate_name(what: &'static str, name: &str) -> Result<(), EngineError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_NAME_BYTES {
        "it is longer than 255 bytes"
    } else if name.contains('\0') {
        "it contains a NUL character"
    } else {
        return Ok(());
    };
    let shown: String = name.chars().take(80).collect();
    Err(EngineError::InvalidName {
        what,
        name: shown,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `parse_dsn` with an empty environment and no home directory.
    fn parse(dsn: &str, options: &Options) -> Result<tokio_postgres::Config, EngineError> {
        parse_dsn_with(dsn, options, |_| None, None).map(|(config, _)| config)
    }

    #[test]
    fn dsn_errors_do_not_leak_the_password() {
        let err = parse("postgresql://u:s3cret@host:notaport/db", &Options::default()).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("invalid database URL"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn tls_errors_do_not_leak_the_password() {
        for dsn in [
            "postgresql://u:s3cret@host/db?sslmode=bogus",
            "postgresql://u:s3cret@host/db?sslmode=verify-full",
            "postgresql://u:s3cret@host/db?sslmode=require&sslrootcert=system",
            "host=h user=u password=s3cret sslmode=verify-ca sslrootcert=/nonexistent/ca.pem",
        ] {
            let text = parse(dsn, &Options::default()).unwrap_err().to_string();
            assert!(text.contains("ssl"), "{text}");
            assert!(!text.contains("s3cret"), "{text}");
        }
    }

    #[test]
    fn sslmode_and_sslrootcert_are_read_in_both_forms() {
        let root = std::env::temp_dir();
        let root = root.to_str().unwrap();
        for dsn in [
            format!("postgresql://h/db?sslmode=verify-ca&sslrootcert={root}"),
            format!("host=h dbname=db sslmode=verify-ca sslrootcert='{root}'"),
        ] {
            let (config, plan) = parse_dsn_with(&dsn, &Options::default(), |_| None, None).unwrap();
            assert_eq!(plan.mode, tls::SslMode::VerifyCa, "{dsn}");
            assert_eq!(plan.roots, Some(tls::Roots::File(root.into())), "{dsn}");
            assert_eq!(config.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
            assert_eq!(config.get_dbname(), Some("db"));
        }
        let (config, plan) =
            parse_dsn_with("postgresql://h/db?sslmode=disable", &Options::default(), |_| None, None).unwrap();
        assert_eq!(plan.mode, tls::SslMode::Disable);
        assert_eq!(config.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
    }

    #[test]
    fn unix_sockets_ignore_sslmode() {
        let (config, plan) =
            parse_dsn_with("host=/run/pg sslmode=verify-full", &Options::default(), |_| None, None).unwrap();
        assert_eq!(plan.mode, tls::SslMode::Disable);
        assert_eq!(config.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
        assert!(parse("host=/run/pg sslmode=bogus", &Options::default()).is_err());
    }

    #[test]
    fn environment_fills_what_the_dsn_leaves_out() {
        let env = |name: &str| {
            let value = match name {
                "PGHOST" => "envhost,/run/pg",
                "PGPORT" => "6543",
                "PGUSER" => "envuser",
                "PGPASSWORD" => "envpass",
                "PGDATABASE" => "envdb",
                "PGSSLMODE" => "require",
                _ => return None,
            };
            Some(value.to_owned())
        };
        let (config, plan) = parse_dsn_with("postgresql://", &Options::default(), env, None).unwrap();
        assert_eq!(describe_target(&config), "envhost:6543, /run/pg/.s.PGSQL.6543");
        assert_eq!(config.get_user(), Some("envuser"));
        assert_eq!(config.get_password(), Some(&b"envpass"[..]));
        assert_eq!(config.get_dbname(), Some("envdb"));
        assert_eq!(plan.mode, tls::SslMode::Require);
        let (config, _) = parse_dsn_with("dbname=app sslmode=disable", &Options::default(), env, None).unwrap();
        assert_eq!(describe_target(&config), "envhost:6543, /run/pg/.s.PGSQL.6543");
        assert_eq!(config.get_dbname(), Some("app"));
        // The DSN wins over the environment.
        let (config, plan) = parse_dsn_with(
            "postgresql://u:p@h:5433/db?sslmode=disable",
            &Options::default(),
            env,
            None,
        )
        .unwrap();
        assert_eq!(describe_target(&config), "h:5433");
        assert_eq!((config.get_user(), config.get_dbname()), (Some("u"), Some("db")));
        assert_eq!(config.get_password(), Some(&b"p"[..]));
        assert_eq!(plan.mode, tls::SslMode::Disable);
    }

    #[test]
    fn no_host_names_pghost() {
        let text = parse("dbname=x", &Options::default()).unwrap_err().to_string();
        assert!(text.contains("no host given") && text.contains("PGHOST"), "{text}");
        let bad_port = |name: &str| (name == "PGPORT").then(|| "54x2".to_owned());
        let err = parse_dsn_with("host=h", &Options::default(), bad_port, None).unwrap_err();
        assert!(err.to_string().contains("$PGPORT"), "{err}");
    }

    #[test]
    fn empty_dsn_is_rejected() {
        let err = parse("  ", &Options::default()).unwrap_err();
        assert!(matches!(err, EngineError::InvalidDsn(_)));
    }

    #[test]
    fn target_names_hosts_and_ports_only() {
        let config = parse("postgresql://u:s3cret@db.example:6543/app", &Options::default()).unwrap();
        assert_eq!(describe_target(&config), "db.example:6543");
        let config = parse("host=/run/pg user=x password=s3cret", &Options::default()).unwrap();
        assert_eq!(describe_target(&config), "/run/pg/.s.PGSQL.5432");
    }

    #[test]
    fn connect_timeout_defaults_but_the_dsn_wins() {
        let options = Options::default();
        let config = parse("postgresql://h/db", &options).unwrap();
        assert_eq!(config.get_connect_timeout(), Some(&options.connect_timeout));
        let config = parse("postgresql://h/db?connect_timeout=3", &options).unwrap();
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(3)));
    }

    #[test]
    fn planner_options_are_added_to_the_dsn_options() {
        let config = parse("postgresql://h/db", &Options::default()).unwrap();
        assert_eq!(config.get_options(), Some(PLANNER_OPTIONS));
        let config = parse("postgresql://h/db?options=-c%20work_mem%3D64MB", &Options::default()).unwrap();
        assert_eq!(
            config.get_options(),
            Some(format!("-c work_mem=64MB {PLANNER_OPTIONS}").as_str())
        );
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["durable", "_x", "app_2"] {
            assert!(validate_schema(good).is_ok(), "{good}");
        }
        let too_long = "a".repeat(64);
        for bad in ["", "Durable", "2x", "a-b", "a;drop", "\"x\"", too_long.as_str()] {
            assert!(validate_schema(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("step", "fetch").is_ok());
        assert!(validate_name("step", &"é".repeat(127)).is_ok()); // 254 bytes
        for (bad, reason) in [
            (String::new(), "it is empty"),
            ("x".repeat(256), "it is longer than 255 bytes"),
            ("a\0b".to_owned(), "it contains a NUL character"),
        ] {
            match validate_name("step", &bad) {
                Err(EngineError::InvalidName { reason: r, .. }) => assert_eq!(r, reason),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
