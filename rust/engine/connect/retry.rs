//! Riding out database restarts and dropped connections: which failures are
//! worth retrying on a fresh connection, and how long to keep trying.

use std::time::{Duration, Instant};

/// SQLSTATEs worth another try: a server going away or not yet back
/// (`admin_shutdown`, `crash_shutdown`, `cannot_connect_now`, and
/// `idle_session_timeout`: class 08 is added below), and a transaction that
/// lost a race with another (`serialization_failure`, `deadlock_detected`).
const TRANSIENT_STATES: [&str; 6] = ["57P01", "57P02", "57P03", "57P05", "40001", "40P01"];

/// True when `err` says the connection or the server went away, or the
/// transaction lost a race, so that the same (idempotent) statement may
/// succeed when sent again. False for errors the statement itself caused.
pub(crate) fn is_transient(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    if let Some(code) = err.code() {
        let code = code.code();
        return code.starts_with("08") || TRANSIENT_STATES.contains(&code);
    }
    // No SQLSTATE: an I/O error on the socket means the connection is gone.
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Exponential backoff between attempts, until a deadline.
pub(crate) struct Backoff {
    delay: Duration,
    give_up_at: Instant,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(2);

    pub(crate) fn until(give_up_at: Instant) -> Self {
        Backoff {
            delay: Self::FIRST,
            give_up_at,
        }
    }

    /// Sleeps before the next attempt; false when the deadline has passed.
    pub(crate) async fn wait(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.give_up_at {
            return false;
        }
        tokio::time::sleep(self.delay.min(self.give_up_at - now)).await;
        self.delay = (self.delay * 2).min(Self::MAX);
        true
    }
}
