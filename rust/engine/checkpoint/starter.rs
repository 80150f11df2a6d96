//! Group commit for starting root workflows (`connect::group`): the root
//! starts made at the same time go as one statement (`start::START_ROOTS`;
//! a start alone goes as `start::START_ROOT`), hence one transaction and
//! one WAL flush.
//!
//! Why: each start was its own statement and commit, so a burst of starts
//! cost a commit each, and took as long as the ten times as many steps
//! that followed them (those are group-committed by the writer). Measured
//! (release build, 200 concurrent `Ctx.start`, medians of 5, see
//! doc/adr/013-root-starts-group-committed.md): 1,700 -> 5,700 starts/s, in 5 statements instead of
//! 200; one start at a time costs what it did.
//!
//! Each row is created or taken over exactly as by a start of its own; a
//! caller gets its row back, and `Engine::start_root` reads it as before.
//! The engine reserves a name per start (`holds`), but a start given up
//! while queued frees its name early: the group sends a repeated name with
//! the next batch.

use std::sync::Arc;

use tokio_postgres::Row;

use crate::engine::connect::group::{Group, Kind, Params, Request};
use crate::engine::error::EngineError;
use crate::engine::sql::Statements;
use crate::engine::values::jsonb::JsonText;

/// Root starts.
pub(crate) struct Starts {
    pub sql: Arc<Statements>,
    pub owner: String,
}

/// A root start besides its name.
pub(crate) struct Start {
    input: JsonText,
    deadline: Option<f64>,
    workflow: Option<String>,
}

/// The sending side, owned by the engine.
pub(crate) type Starter = Group<Starts>;

impl Kind for Starts {
    type Item = Start;

    fn size(start: &Start) -> usize {
        start.input.as_str().len()
    }

    fn what(name: &str) -> String {
        format!("starting workflow {name:?}")
    }

    fn what_many(count: usize) -> String {
        format!("starting {count} workflows")
    }

    fn statement<'a>(&'a self, batch: &'a [Request<Start>]) -> (&'a str, Params<'a>) {
        // A start alone costs what it did before batching: the batched
        // statement's join costs about 50 µs more for one row.
        if let [one] = batch {
            let params: Params<'a> = vec![
                Box::new(&one.name),
                Box::new(&one.item.input),
                Box::new(&self.owner),
                Box::new(one.item.deadline),
                Box::new(&one.item.workflow),
            ];
            return (&self.sql.start_root, params);
        }
        let names: Vec<&str> = batch.iter().map(|r| r.name.as_str()).collect();
        let inputs: Vec<&JsonText> = batch.iter().map(|r| &r.item.input).collect();
        let deadlines: Vec<Option<f64>> = batch.iter().map(|r| r.item.deadline).collect();
        let workflows: Vec<Option<&str>> = batch.iter().map(|r| r.item.workflow.as_deref()).collect();
        let params: Params<'a> = vec![
            Box::new(names),
            Box::new(inputs),
            Box::new(&self.owner),
            Box::new(deadlines),
            Box::new(workflows),
        ];
        (&self.sql.start_roots, params)
    }
}

impl Group<Starts> {
    /// Creates the root `name` or takes the existing row over (the claim
    /// rules of `start::ROOT_CLAIM`), and returns the row, once committed.
    pub(super) async fn start(
        &self,
        name: &str,
        input: &JsonText,
        deadline: Option<f64>,
        workflow: Option<&str>,
    ) -> Result<Row, EngineError> {
        let start = Start {
            input: input.clone(),
            deadline,
            workflow: workflow.map(str::to_owned),
        };
        self.send(name, start).await
    }
}
