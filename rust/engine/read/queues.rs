//! A read-only view of the queues: their limits and how much of them is
//! used now.

use std::time::Duration;

use tokio_postgres::Row;

use crate::engine::Engine;
use crate::engine::error::EngineError;
use crate::engine::sql::Sql;
use crate::engine::values::moment::Moment;
use crate::engine::workflow::col;

/// A queue as it is now.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueInfo {
    pub name: String,
    pub paused: bool,
    /// Most runs running at once (`None`: no limit).
    pub concurrency: Option<i32>,
    /// Most runs of one key running at once (`None`: no limit).
    pub concurrency_per_key: Option<i32>,
    /// Its rate windows, shortest first.
    pub rates: Vec<RateUse>,
    /// Root runs of the queue running now.
    pub running: i64,
    /// Runs due that wait for a claim.
    pub queued: i64,
    /// Runs not due yet (delayed, or scheduled for later).
    pub delayed: i64,
    /// When the longest-waiting due run became due.
    pub oldest_due: Option<Moment>,
}

/// A rate window and how much of it the last `period` used.
#[derive(Debug, Clone, PartialEq)]
pub struct RateUse {
    pub max_starts: i32,
    pub period: Duration,
    /// Runs started within the last `period`.
    pub used: i64,
}

impl Engine {
    /// Every queue, by name.
    pub async fn list_queues(&self) -> Result<Vec<QueueInfo>, EngineError> {
        self.check_open()?;
        let sql = &self.inner.sql;
        let rows = retrying!(self, "listing queues", |client| async {
            let statement = client.prepare_cached(&sql.list_queues).await?;
            client.query(&statement, &[]).await
        })?;
        rows.iter().map(read_queue).collect()
    }
}

pub(super) fn read_queue(row: &Row) -> Result<QueueInfo, EngineError> {
    let max_starts: Vec<i32> = col(row, "rate_max")?;
    let periods: Vec<f64> = col(row, "rate_period")?;
    let used: Vec<i64> = col(row, "rate_used")?;
    let rates = max_starts
        .into_iter()
        .zip(periods)
        .zip(used)
        .map(|((max_starts, period), used)| RateUse {
            max_starts,
            // Checked positive by the table; a year at most (see create_queue).
            period: Duration::try_from_secs_f64(period).unwrap_or(Duration::ZERO),
            used,
        })
        .collect();
    Ok(QueueInfo {
        name: col(row, "name")?,
        paused: col(row, "paused")?,
        concurrency: col(row, "max_concurrency")?,
        concurrency_per_key: col(row, "concurrency_per_key")?,
        rates,
        running: col(row, "running")?,
        queued: col(row, "queued")?,
        delayed: col(row, "delayed")?,
        oldest_due: col(row, "oldest_due")?,
    })
}

/// Every queue with its limits, what runs and waits in it, and, for each
/// rate window (shortest first), the starts within the last period. Counts
/// read the partial indexes of waiting and running roots.
pub(crate) const LIST_QUEUES: Sql = Sql::new(
    "
SELECT q.name, q.paused, q.max_concurrency, q.concurrency_per_key,
       (SELECT count(*) FROM {schema}.task AS r
        WHERE r.queue = q.name AND r.status = 'running' AND r.parent_id IS NULL) AS running,
       (SELECT count(*) FROM {schema}.task AS w
        WHERE w.queue = q.name AND w.status IN ('queued', 'scheduled') AND w.parent_id IS NULL
          AND coalesce(w.run_at <= now(), true)) AS queued,
       (SELECT count(*) FROM {schema}.task AS w
        WHERE w.queue = q.name AND w.status IN ('queued', 'scheduled') AND w.parent_id IS NULL
          AND w.run_at > now()) AS delayed,
       (SELECT min(coalesce(w.run_at, w.created_at)) FROM {schema}.task AS w
        WHERE w.queue = q.name AND w.status IN ('queued', 'scheduled') AND w.parent_id IS NULL
          AND coalesce(w.run_at <= now(), true)) AS oldest_due,
       ARRAY(SELECT r.max_starts FROM {schema}.task_queue_rate AS r WHERE r.queue = q.name ORDER BY r.period)
           AS rate_max,
       ARRAY(SELECT extract(epoch FROM r.period)::float8 FROM {schema}.task_queue_rate AS r
             WHERE r.queue = q.name ORDER BY r.period) AS rate_period,
       ARRAY(SELECT (SELECT count(*) FROM {schema}.task_queue_start AS s
                     WHERE s.queue = r.queue AND s.started_at > now() - r.period)
             FROM {schema}.task_queue_rate AS r WHERE r.queue = q.name ORDER BY r.period) AS rate_used
FROM {schema}.task_queue AS q
ORDER BY q.name",
);
