//! Starting (or resuming) a workflow: one statement creates the row or
//! takes the existing one, and returns the saved history of its direct
//! children in the same round trip.

use std::collections::HashMap;

use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

use super::error::EngineError;
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

    fn parse(text: &str) -> Result<Self, EngineError> {
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

/// Identity of a running workflow, as the writer needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkflowId {
    pub id: i64,
    pub root_id: i64,
}

/// What a previous run recorded under one name of a workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub kind: Kind,
    pub status: Status,
    pub attempt: i32,
    /// The saved result of a completed step; `None` otherwise.
    pub output: Option<JsonText>,
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
    pub history: HashMap<String, HistoryEntry>,
}

/// Turns the row of a start statement into `Started`, or the error it implies.
pub(crate) fn read_started(
    row: &Row,
    name: &str,
    parent: Option<&str>,
) -> Result<Started, EngineError> {
    let kind = Kind::parse(col(row, "kind")?)?;
    if kind == Kind::Step {
        return Err(EngineError::DuplicateName {
            workflow: parent.unwrap_or_default().to_owned(),
            name: name.to_owned(),
        });
    }
    if !col::<bool>(row, "input_matches")? {
        return Err(EngineError::InputMismatch {
            name: name.to_owned(),
        });
    }
    Ok(Started {
        workflow: WorkflowId {
            id: col(row, "id")?,
            root_id: col(row, "root_id")?,
        },
        status: Status::parse(col(row, "status")?)?,
        attempt: col(row, "attempt")?,
        created: col(row, "created")?,
        output: col(row, "output")?,
        error: col(row, "error")?,
        history: read_history(row)?,
    })
}

fn read_history(row: &Row) -> Result<HashMap<String, HistoryEntry>, EngineError> {
    let Some(names) = col::<Option<Vec<String>>>(row, "names")? else {
        return Ok(HashMap::new());
    };
    let kinds: Vec<&str> = col(row, "kinds")?;
    let statuses: Vec<&str> = col(row, "statuses")?;
    let attempts: Vec<i32> = col(row, "attempts")?;
    let outputs: Vec<Option<JsonText>> = col(row, "outputs")?;
    names
        .into_iter()
        .zip(kinds)
        .zip(statuses)
        .zip(attempts)
        .zip(outputs)
        .map(|((((name, kind), status), attempt), output)| {
            let entry = HistoryEntry {
                kind: Kind::parse(kind)?,
                status: Status::parse(status)?,
                attempt,
                output,
            };
            Ok((name, entry))
        })
        .collect()
}

/// Reads one column; a type mismatch is reported as an error, never a panic.
pub(crate) fn col<'a, T: FromSql<'a>>(row: &'a Row, name: &str) -> Result<T, EngineError> {
    row.try_get(name)
        .map_err(|e| EngineError::database(format_args!("reading column {name:?}"), &e))
}
