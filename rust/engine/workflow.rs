//! Starting (or resuming) a workflow: one statement creates the row or takes
//! it over, a second one (on resume only) reads the history of its direct
//! children.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

use super::error::EngineError;
use super::holds::Hold;
use super::jsonb::JsonText;

/// Lifecycle of a task row (see doc/schema.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Pending,
    Queued,
    Scheduled,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    /// Every status, in the order a run goes through them.
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Queued,
        Status::Scheduled,
        Status::Running,
        Status::Completed,
        Status::Failed,
        Status::Cancelled,
    ];

    /// The statuses of a run that ended: it no longer changes by itself.
    pub const FINISHED: [Status; 3] = [Status::Completed, Status::Failed, Status::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Queued => "queued",
            Status::Scheduled => "scheduled",
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self, EngineError> {
        Ok(match text {
            "pending" => Status::Pending,
            "queued" => Status::Queued,
            "scheduled" => Status::Scheduled,
            "running" => Status::Running,
            "completed" => Status::Completed,
            "failed" => Status::Failed,
            "cancelled" => Status::Cancelled,
            other => return Err(unexpected("status", other)),
        })
    }
}

/// Whether a row is a workflow (root or child) or a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Workflow,
    Step,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Workflow => "workflow",
            Kind::Step => "step",
        }
    }

    fn parse(text: &str) -> Result<Self, EngineError> {
        match text {
            "workflow" => Ok(Kind::Workflow),
            "step" => Ok(Kind::Step),
            other => Err(unexpected("kind", other)),
        }
    }
}

fn unexpected(column: &str, value: &str) -> EngineError {
    EngineError::Unexpected(format!("{column} {value:?}"))
}

/// A workflow as held by this process: its identity and the lease epoch
/// that every write of it is fenced on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkflowId {
    pub id: i64,
    pub root_id: i64,
    pub epoch: i64,
}

/// What a previous run recorded under one name of a workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub kind: Kind,
    pub status: Status,
    pub attempt: i32,
    /// The saved result of a completed step; `None` otherwise.
    pub output: Option<JsonText>,
    /// The `type` of the saved error record of a failed row.
    pub error_type: Option<String>,
}

/// A workflow row as `start` found or created it, with its history.
#[derive(Debug, Clone)]
pub struct Started {
    pub workflow: WorkflowId,
    pub status: Status,
    pub attempt: i32,
    /// True when this call created the row (a first run).
    pub created: bool,
    pub output: Option<JsonText>,
    pub error: Option<JsonText>,
    /// When the workflow must be completed by, if it has a deadline.
    pub deadline: Option<Instant>,
    pub history: HashMap<String, HistoryEntry>,
    /// For a root taken to run: its hold in this engine (see `Engine::start`).
    pub hold: Option<Hold>,
}

/// How a workflow row was come by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Created or taken over: only a running row held by this owner will do.
    Take,
    /// Read to replay under a finished parent: any status will do.
    Replay,
}

/// Turns the row of a start statement into `Started` (history still empty),
/// or the error it implies.
pub(crate) fn read_started(
    row: &Row,
    name: &str,
    parent: Option<&str>,
    access: Access,
) -> Result<Started, EngineError> {
    let kind = Kind::parse(col(row, "kind")?)?;
    if kind == Kind::Step {
        return Err(EngineError::DuplicateName {
            workflow: parent.unwrap_or_default().to_owned(),
            name: name.to_owned(),
        });
    }
    if !col::<bool>(row, "input_matches")? {
        return Err(EngineError::InputMismatch { name: name.to_owned() });
    }
    let id: i64 = col(row, "id")?;
    let status = Status::parse(col(row, "status")?)?;
    match status {
        _ if access == Access::Replay => {}
        Status::Completed => {}
        Status::Cancelled => return Err(EngineError::Cancelled { workflow_id: id }),
        Status::Running if col::<bool>(row, "owned")? => {}
        // Waiting in a queue and not taken: only a start by another function can see that.
        Status::Queued | Status::Scheduled => {
            return Err(EngineError::OtherWorkflow {
                name: name.to_owned(),
                workflow: col(row, "workflow")?,
            });
        }
        _ => {
            return Err(EngineError::WorkflowBusy { name: name.to_owned() });
        }
    }
    let deadline = col::<Option<f64>>(row, "deadline_in")?
        .map(|seconds| Instant::now() + Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO));
    Ok(Started {
        workflow: WorkflowId {
            id,
            root_id: col(row, "root_id")?,
            epoch: col(row, "lease_epoch")?,
        },
        status,
        attempt: col(row, "attempt")?,
        created: col(row, "created")?,
        output: col(row, "output")?,
        error: col(row, "error")?,
        deadline,
        history: HashMap::new(),
        hold: None,
    })
}

/// The rows of the history query, by name.
pub(crate) fn read_history(rows: &[Row]) -> Result<HashMap<String, HistoryEntry>, EngineError> {
    rows.iter()
        .map(|row| {
            let entry = HistoryEntry {
                kind: Kind::parse(col(row, "kind")?)?,
                status: Status::parse(col(row, "status")?)?,
                attempt: col(row, "attempt")?,
                output: col(row, "output")?,
                error_type: col(row, "error_type")?,
            };
            Ok((col(row, "name")?, entry))
        })
        .collect()
}

/// Why a workflow refuses writes (of `what`) made under `epoch`, from a row
/// of the `diagnose` statement: `(id, reason)`, `None` when it would take them.
pub(crate) fn refusal(row: &Row, epoch: i64, what: &str) -> Result<(i64, Option<EngineError>), EngineError> {
    let id: i64 = col(row, "id")?;
    let status = Status::parse(col(row, "status")?)?;
    let reason = if status == Status::Cancelled {
        Some(EngineError::Cancelled { workflow_id: id })
    } else if !col::<bool>(row, "ours")? || col::<i64>(row, "lease_epoch")? != epoch {
        Some(EngineError::LeaseLost { workflow_id: id })
    } else if status != Status::Running {
        Some(EngineError::NotRunning {
            workflow_id: id,
            what: what.to_owned(),
        })
    } else {
        None
    };
    Ok((id, reason))
}

/// A workflow row that is not there any more.
pub(crate) fn vanished(id: i64) -> EngineError {
    EngineError::Unexpected(format!("workflow id {id} no longer exists"))
}

/// Reads one column; a type mismatch is reported as an error, never a panic.
pub(crate) fn col<'a, T: FromSql<'a>>(row: &'a Row, name: &str) -> Result<T, EngineError> {
    row.try_get(name)
        .map_err(|e| EngineError::database(format_args!("reading column {name:?}"), &e))
}
