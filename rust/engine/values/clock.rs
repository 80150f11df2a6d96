//! The process's wall clock, for the times of step attempts: each is taken
//! where the attempt begins and where its outcome is handed over, so that a
//! step's row holds how long its body ran, whatever the commits that save it
//! (see `checkpoint::writer::AttemptTimes`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, by the wall clock of this process: microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    let micros = |elapsed: std::time::Duration| i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX);
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => micros(since),
        // A clock set before 1970: as far before the epoch.
        Err(before) => -micros(before.duration()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_counts_microseconds_since_the_epoch() {
        let before = now_us();
        let after = now_us();
        // 2020-01-01 and 2200-01-01 bound any machine this runs on.
        assert!(
            before > 1_577_836_800_000_000 && after < 7_258_118_400_000_000,
            "{before}"
        );
        assert!(after >= before);
    }
}
