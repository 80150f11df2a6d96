//! Transaction steps: the user's statements and the step's checkpoint in one
//! Postgres transaction, so both commit or neither does.
//!
//! A `Transaction` holds a pooled connection for the length of the step:
//!
//! 1. `Engine::begin_transaction` writes the step's `running` marker on that
//!    connection, outside the transaction (it survives a rollback, so a
//!    resume counts the attempt; it never goes through the writer, so no
//!    batch of the writer touches this step's row while the transaction
//!    runs), then opens the transaction (`BEGIN`).
//! 2. `prepare`, `query` and `execute` run the user's statements, one round
//!    trip each, each bounded by the reconnect timeout.
//! 3. `commit` writes the step's completed row with the writer's own `FLUSH`
//!    statement (the same fence: owner, lease epoch, workflow running; the
//!    workflow row share-locked until commit, so a takeover waits for this
//!    commit or this write sees the takeover), then `COMMIT`. A refused
//!    fence rolls everything back.
//!
//! A transaction that is dropped open (a cancelled task, a crash of the
//! caller) closes its connection instead of returning it to the pool: the
//! server rolls back what it did.

use deadpool_postgres::Object;
use tokio_postgres::Statement;
use tokio_postgres::error::{DbError, Severity};
use tokio_postgres::types::ToSql;

use crate::engine::connect::pool::{TransactionPermit, no_answer};
use crate::engine::values::jsonb::JsonText;
use crate::engine::values::sql_values::{Param, Rows, cell};
use crate::engine::workflow::{Status, WorkflowId, refusal, vanished};
use crate::engine::{Engine, EngineError};

/// Opens the transaction. Durable's connections plan for its own statements
/// (generic plans, index access: see doc/adr/003-generic-plans-index-access.md);
/// the user's statements get Postgres' default planning back
/// for the length of the transaction.
const BEGIN: &str = "BEGIN; SET LOCAL plan_cache_mode = auto; SET LOCAL enable_seqscan = on";

/// Durable's planner settings again, for the checkpoint written at commit.
const ENGINE_PLANNER: &str = "SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off";

/// Why a commit did not succeed.
#[derive(Debug, Clone)]
pub enum CommitError {
    /// Nothing was committed: neither the user's writes nor the step's result.
    RolledBack(EngineError),
    /// The connection broke (or did not answer) during `COMMIT`: the
    /// transaction may or may not have committed. Only reading the step's
    /// row tells; nothing may be written for this step meanwhile.
    InDoubt(EngineError),
}

/// One transaction step in progress. See the module documentation.
pub struct Transaction {
    engine: Engine,
    /// `None` once committed or rolled back.
    conn: Option<Object>,
    /// Its place in the share of the pool transaction steps may hold (see
    /// `pool`); given back with the transaction.
    _permit: TransactionPermit,
    workflow: WorkflowId,
    name: String,
    attempt: i32,
    /// When the attempt began, by this process's clock (see `AttemptTimes`).
    started_us: i64,
    /// The first statement that failed: the transaction can only roll back.
    failed: Option<EngineError>,
}

impl Engine {
    /// Starts transaction step `name` (attempt `attempt`) of `workflow`: a
    /// pooled connection within the share transaction steps may hold (an
    /// `InvalidOption` when the pool leaves none), the step's `running`
    /// marker (fenced, so a lost lease is found before the user's function
    /// runs), and `BEGIN`. `started_us`: when the attempt began (`now_us`).
    pub async fn begin_transaction(
        &self,
        workflow: WorkflowId,
        name: String,
        attempt: i32,
        started_us: i64,
    ) -> Result<Transaction, EngineError> {
        self.check_open()?;
        let inner = &self.inner;
        let context = format!("starting transaction step {name:?}");
        let give_up = std::time::Instant::now() + inner.reconnect_timeout;
        let permit = inner
            .connections
            .transaction_permit(&name, give_up, inner.reconnect_timeout)
            .await?;
        let conn = inner
            .connections
            .get(&context, give_up, inner.reconnect_timeout)
            .await?;
        let mut tx = Transaction {
            engine: self.clone(),
            conn: Some(conn),
            _permit: permit,
            workflow,
            name,
            attempt,
            started_us,
            failed: None,
        };
        let answer = match tx.conn.as_ref() {
            Some(conn) => tx.timed(tx.flush(conn, Status::Running, None, None, "off")).await,
            None => return Err(over(&tx.name)),
        };
        if !tx.settle(&context, answer)? {
            let reason = tx.refusal().await;
            tx.close_now();
            return Err(reason);
        }
        let answer = match tx.conn.as_ref() {
            Some(conn) => tx.timed(conn.batch_execute(BEGIN)).await,
            None => return Err(over(&tx.name)),
        };
        tx.settle(&context, answer)?;
        Ok(tx)
    }
}

impl Transaction {
    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Parses `sql` on the server: the statement, whose `params()` are the
    /// types the server inferred for `$1`, `$2`... Not cached: the user's
    /// statements are open-ended, and a pooled connection must not gather
    /// them (the server forgets each once its `Statement` is dropped).
    pub async fn prepare(&mut self, sql: &str) -> Result<Statement, EngineError> {
        let context = format!("transaction step {:?}: preparing a statement", self.name);
        self.check_usable(&context)?;
        let answer = match self.conn.as_ref() {
            Some(conn) => self.timed(conn.prepare(sql)).await,
            None => return Err(over(&self.name)),
        };
        self.settle_statement(&context, answer)
    }

    /// Runs a statement prepared by `prepare`; its rows.
    pub async fn query(&mut self, statement: &Statement, params: &[Param]) -> Result<Rows, EngineError> {
        let context = format!("transaction step {:?}", self.name);
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        self.check_usable(&context)?;
        let answer = match self.conn.as_ref() {
            Some(conn) => self.timed(conn.query(statement, &refs)).await,
            None => return Err(over(&self.name)),
        };
        let rows = self.settle_statement(&context, answer)?;
        let columns = statement.columns();
        let mut out = Rows {
            columns: columns.iter().map(|c| c.name().to_owned()).collect(),
            rows: Vec::with_capacity(rows.len()),
        };
        for row in &rows {
            let cells = (0..columns.len())
                .map(|i| cell(row, i))
                .collect::<Result<Vec<_>, _>>()?;
            out.rows.push(cells);
        }
        Ok(out)
    }

    /// Runs a statement prepared by `prepare`; the number of rows it affected.
    pub async fn execute(&mut self, statement: &Statement, params: &[Param]) -> Result<u64, EngineError> {
        let context = format!("transaction step {:?}", self.name);
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        self.check_usable(&context)?;
        let answer = match self.conn.as_ref() {
            Some(conn) => self.timed(conn.execute(statement, &refs)).await,
            None => return Err(over(&self.name)),
        };
        self.settle_statement(&context, answer)
    }

    /// Writes the step's result (fenced like every checkpoint), its attempt
    /// ended at `ended_us` (`now_us`), and commits it with everything the
    /// user's statements did.
    pub async fn commit(mut self, output: JsonText, ended_us: i64) -> Result<(), CommitError> {
        let context = format!("committing transaction step {:?}", self.name);
        if let Some(failed) = self.failed.clone() {
            self.rollback().await;
            return Err(CommitError::RolledBack(EngineError::Database {
                context,
                message: format!(
                    "a statement of the transaction failed earlier ({failed}), so Postgres aborted the \
                     transaction; it was rolled back"
                ),
                sqlstate: Some("25P02".to_owned()),
            }));
        }
        let answer = match self.conn.as_ref() {
            Some(conn) => {
                self.timed(async {
                    conn.batch_execute(ENGINE_PLANNER).await?;
                    self.flush(conn, Status::Completed, Some(&output), Some(ended_us), "on")
                        .await
                })
                .await
            }
            None => return Err(CommitError::RolledBack(over(&self.name))),
        };
        let written = self.settle(&context, answer);
        match written {
            Ok(true) => {}
            Ok(false) => {
                let reason = self.refusal().await;
                self.rollback().await;
                return Err(CommitError::RolledBack(reason));
            }
            Err(err) => {
                self.rollback().await;
                return Err(CommitError::RolledBack(err));
            }
        }
        let Some(conn) = self.conn.take() else {
            return Err(CommitError::RolledBack(EngineError::Closed));
        };
        let timeout = self.engine.inner.reconnect_timeout;
        match tokio::time::timeout(timeout, conn.batch_execute("COMMIT")).await {
            Ok(Ok(())) => Ok(()),
            // The server refused the commit with an ERROR (a deferred
            // constraint, a serialization failure): nothing committed. A
            // FATAL (the session terminated) may come after the commit
            // record was written, so it proves nothing: in doubt, below.
            Ok(Err(err)) if err.as_db_error().and_then(DbError::parsed_severity) == Some(Severity::Error) => {
                drop(Object::take(conn));
                Err(CommitError::RolledBack(EngineError::database(&context, &err)))
            }
            Ok(Err(err)) => {
                drop(Object::take(conn));
                Err(CommitError::InDoubt(EngineError::database(&context, &err)))
            }
            Err(_) => {
                drop(Object::take(conn));
                Err(CommitError::InDoubt(no_answer(
                    &self.engine.inner.target,
                    &context,
                    timeout,
                )))
            }
        }
    }

    /// Rolls back; the connection goes back to the pool if the server
    /// confirmed, else it is closed (which rolls back too).
    pub async fn rollback(mut self) {
        let Some(conn) = self.conn.take() else { return };
        let timeout = self.engine.inner.reconnect_timeout;
        match tokio::time::timeout(timeout, conn.batch_execute("ROLLBACK")).await {
            Ok(Ok(())) => drop(conn),
            _ => drop(Object::take(conn)),
        }
    }

    /// Closes the connection without a word: the server rolls back.
    fn close_now(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(Object::take(conn));
        }
    }

    /// Refuses a statement once one failed: Postgres ignores the rest of
    /// an aborted transaction, and saying why helps more than its 25P02.
    fn check_usable(&self, context: &str) -> Result<(), EngineError> {
        match &self.failed {
            Some(failed) => Err(EngineError::Database {
                context: context.to_owned(),
                message: format!(
                    "an earlier statement of the transaction failed ({failed}); Postgres ignores the \
                     rest of the transaction, which will be rolled back"
                ),
                sqlstate: Some("25P02".to_owned()),
            }),
            None => Ok(()),
        }
    }

    /// `work` bounded by the reconnect timeout (`None`: no answer in time).
    async fn timed<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        tokio::time::timeout(self.engine.inner.reconnect_timeout, work)
            .await
            .ok()
    }

    /// The outcome of one of the user's statements. A failure aborts the
    /// transaction (remembered, to refuse what follows); no answer in time
    /// closes the connection (it may be stuck; the server rolls back).
    fn settle_statement<T>(
        &mut self,
        context: &str,
        answer: Option<Result<T, tokio_postgres::Error>>,
    ) -> Result<T, EngineError> {
        let err = match answer {
            Some(Ok(value)) => return Ok(value),
            Some(Err(err)) => EngineError::database(context, &err),
            None => {
                self.close_now();
                self.no_answer(context)
            }
        };
        self.failed = Some(err.clone());
        Err(err)
    }

    /// The outcome of the engine's own work on the connection: on any
    /// failure the connection is closed (the server rolls back).
    fn settle<T>(&mut self, context: &str, answer: Option<Result<T, tokio_postgres::Error>>) -> Result<T, EngineError> {
        let err = match answer {
            Some(Ok(value)) => return Ok(value),
            Some(Err(err)) => EngineError::database(context, &err),
            None => self.no_answer(context),
        };
        self.close_now();
        Err(err)
    }

    fn no_answer(&self, context: &str) -> EngineError {
        no_answer(&self.engine.inner.target, context, self.engine.inner.reconnect_timeout)
    }

    /// The writer's `FLUSH` statement with this one step record: true when
    /// the fence let it through and the row was written.
    async fn flush(
        &self,
        conn: &Object,
        status: Status,
        output: Option<&JsonText>,
        ended_us: Option<i64>,
        durability: &str,
    ) -> Result<bool, tokio_postgres::Error> {
        let inner = &self.engine.inner;
        let statement = conn.prepare_cached(&inner.sql.flush).await?;
        let w = self.workflow;
        let no_ids: Vec<i64> = Vec::new();
        let no_text: Vec<&str> = Vec::new();
        let no_json: Vec<Option<&JsonText>> = Vec::new();
        let none: Option<&JsonText> = None;
        let owner = inner.owner.id.as_str();
        let rows = conn
            .query(
                &statement,
                &[
                    &vec![w.id],
                    &vec![w.root_id],
                    &vec![self.name.as_str()],
                    &vec![status.as_str()],
                    &vec![self.attempt],
                    &vec![output],
                    &vec![none],
                    &vec![w.epoch],
                    &vec![Some(self.started_us)],
                    &vec![ended_us],
                    &no_ids,
                    &no_text,
                    &no_json,
                    &no_json,
                    &no_ids,
                    &owner,
                    &durability,
                    &inner.schema,
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Why the fence refused this step's row: the workflow's lease, status,
    /// or (when the workflow would take it) a child workflow of that name.
    async fn refusal(&mut self) -> EngineError {
        let duplicate = EngineError::DuplicateName {
            workflow: format!("id {}", self.workflow.id),
            name: self.name.clone(),
        };
        let context = "checking a workflow's lease";
        let id = self.workflow.id;
        let epoch = self.workflow.epoch;
        let inner = &self.engine.inner;
        let owner = inner.owner.id.as_str();
        let answer = match self.conn.as_ref() {
            Some(conn) => {
                self.timed(conn.query_opt(&inner.sql.diagnose, &[&vec![id], &owner]))
                    .await
            }
            None => return over(&self.name),
        };
        let found = self.settle(context, answer);
        match found {
            Ok(Some(row)) => match refusal(&row, epoch, "transaction step") {
                Ok((_, reason)) => reason.unwrap_or(duplicate),
                Err(err) => err,
            },
            Ok(None) => vanished(id),
            Err(err) => err,
        }
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        // Open still: never hand a connection inside a transaction back to the pool.
        self.close_now();
    }
}

fn over(name: &str) -> EngineError {
    EngineError::Database {
        context: format!("transaction step {name:?}"),
        message: "the transaction is over (committed or rolled back): use `tx` only inside the step's function"
            .to_owned(),
        sqlstate: None,
    }
}
