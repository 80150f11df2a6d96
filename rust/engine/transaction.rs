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

use std::error::Error;
use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};
use deadpool_postgres::Object;
use tokio_postgres::error::{DbError, Severity};
use tokio_postgres::types::{Format, FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};
use tokio_postgres::{Row, Statement};

use super::jsonb::JsonText;
use super::pool::{checkout, no_answer};
use super::workflow::{Status, WorkflowId, refusal, vanished};
use super::{Engine, EngineError};

/// Opens the transaction. Durable's connections plan for its own statements
/// (generic plans, index access: see "Generic plans, index access" in
/// doc/design.md); the user's statements get Postgres' default planning back
/// for the length of the transaction.
const BEGIN: &str = "BEGIN; SET LOCAL plan_cache_mode = auto; SET LOCAL enable_seqscan = on";

/// Durable's planner settings again, for the checkpoint written at commit.
const ENGINE_PLANNER: &str = "SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off";

/// A parameter of a user's statement, already matched (by the bindings) to
/// the type the server inferred for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    Bool(bool),
    Int2(i16),
    Int4(i32),
    Int8(i64),
    Float4(f32),
    Float8(f64),
    /// Sent in Postgres' text format: the server parses it as the
    /// parameter's type (numeric, uuid, date, timestamps, text...).
    Text(String),
    Bytes(Vec<u8>),
    Json(JsonText),
}

impl ToSql for Param {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Param::Null => return Ok(IsNull::Yes),
            Param::Bool(v) => out.put_u8(u8::from(*v)),
            Param::Int2(v) => out.put_i16(*v),
            Param::Int4(v) => out.put_i32(*v),
            Param::Int8(v) => out.put_i64(*v),
            Param::Float4(v) => out.put_f32(*v),
            Param::Float8(v) => out.put_f64(*v),
            Param::Text(v) => out.put_slice(v.as_bytes()),
            Param::Bytes(v) => out.put_slice(v),
            Param::Json(v) => return v.to_sql(ty, out),
        }
        Ok(IsNull::No)
    }

    /// The bindings chose the variant from the parameter's type.
    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        if matches!(self, Param::Text(_)) {
            Format::Text
        } else {
            Format::Binary
        }
    }

    to_sql_checked!();
}

/// A value of a result column. Timestamps are microseconds since
/// 2000-01-01 (UTC for `TimestampTz`), dates days since then, as Postgres
/// sends them.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Json(JsonText),
    /// A numeric's decimal text (`NaN`, `Infinity`, `-Infinity` included).
    Numeric(String),
    Timestamp(i64),
    TimestampTz(i64),
    Date(i32),
    Uuid([u8; 16]),
    Bytes(Vec<u8>),
}

/// The rows of a query: column names, then each row's cells in that order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

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
    workflow: WorkflowId,
    name: String,
    attempt: i32,
    /// The first statement that failed: the transaction can only roll back.
    failed: Option<EngineError>,
}

impl Engine {
    /// Starts transaction step `name` (attempt `attempt`) of `workflow`: a
    /// pooled connection, the step's `running` marker (fenced, so a lost
    /// lease is found before the user's function runs), and `BEGIN`.
    pub async fn begin_transaction(
        &self,
        workflow: WorkflowId,
        name: String,
        attempt: i32,
    ) -> Result<Transaction, EngineError> {
        self.check_open()?;
        let inner = &self.inner;
        let context = format!("starting transaction step {name:?}");
        let conn = tokio::time::timeout(inner.reconnect_timeout, checkout(&inner.pool, &inner.target))
            .await
            .map_err(|_| no_answer(&inner.target, &context, inner.reconnect_timeout))??;
        let mut tx = Transaction {
            engine: self.clone(),
            conn: Some(conn),
            workflow,
            name,
            attempt,
            failed: None,
        };
        let answer = match tx.conn.as_ref() {
            Some(conn) => tx.timed(tx.flush(conn, Status::Running, None, "off")).await,
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

    /// Writes the step's result (fenced like every checkpoint) and commits
    /// it with everything the user's statements did.
    pub async fn commit(mut self, output: JsonText) -> Result<(), CommitError> {
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
                    self.flush(conn, Status::Completed, Some(&output), "on").await
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

/// The raw bytes of any column, for `cell` to decode by type.
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Column `i` of `row`, decoded from Postgres' binary format.
fn cell(row: &Row, i: usize) -> Result<Cell, EngineError> {
    let column = &row.columns()[i];
    let ty = column.type_();
    let Some(Raw(raw)) = row
        .try_get::<_, Option<Raw<'_>>>(i)
        .map_err(|e| EngineError::database(format_args!("reading column {:?}", column.name()), &e))?
    else {
        return Ok(Cell::Null);
    };
    decode(ty, raw).map_err(|problem| EngineError::Database {
        context: format!("reading column {:?}", column.name()),
        message: problem,
        sqlstate: None,
    })
}

fn decode(ty: &Type, raw: &[u8]) -> Result<Cell, String> {
    let bad = |e: Box<dyn Error + Sync + Send>| format!("cannot decode a value of type {ty}: {e}");
    Ok(match *ty {
        Type::BOOL => Cell::Bool(bool::from_sql(ty, raw).map_err(bad)?),
        Type::INT2 => Cell::Int(i16::from_sql(ty, raw).map_err(bad)?.into()),
        Type::INT4 => Cell::Int(i32::from_sql(ty, raw).map_err(bad)?.into()),
        Type::INT8 => Cell::Int(i64::from_sql(ty, raw).map_err(bad)?),
        Type::OID => Cell::Int(u32::from_sql(ty, raw).map_err(bad)?.into()),
        Type::FLOAT4 => Cell::Float(f32::from_sql(ty, raw).map_err(bad)?.into()),
        Type::FLOAT8 => Cell::Float(f64::from_sql(ty, raw).map_err(bad)?),
        Type::JSON | Type::JSONB => Cell::Json(JsonText::from_sql(ty, raw).map_err(bad)?),
        Type::NUMERIC => Cell::Numeric(numeric_text(raw)?),
        Type::TIMESTAMP => Cell::Timestamp(i64::from_sql(&Type::INT8, raw).map_err(bad)?),
        Type::TIMESTAMPTZ => Cell::TimestampTz(i64::from_sql(&Type::INT8, raw).map_err(bad)?),
        Type::DATE => Cell::Date(i32::from_sql(&Type::INT4, raw).map_err(bad)?),
        Type::UUID => Cell::Uuid(raw.try_into().map_err(|_| format!("a uuid of {} bytes", raw.len()))?),
        Type::BYTEA => Cell::Bytes(raw.to_vec()),
        // Text-like types (text, varchar, char, name, citext...) and enums
        // (whose binary form is their label) are UTF-8 text.
        _ if <&str as FromSql>::accepts(ty) || matches!(ty.kind(), Kind::Enum(_)) => {
            Cell::Text(std::str::from_utf8(raw).map_err(|e| bad(e.into()))?.to_owned())
        }
        _ => {
            return Err(format!(
                "durable does not convert values of type {ty}; cast the column in the query \
                 (e.g. `col::text`)"
            ));
        }
    })
}

/// The decimal text of a numeric in Postgres' binary format: ndigits,
/// weight, sign, dscale, then base-10000 digits, the first of weight
/// `weight`.
fn numeric_text(raw: &[u8]) -> Result<String, String> {
    let word = |i: usize| {
        raw.get(2 * i..2 * i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "a truncated numeric".to_owned())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(i16::from_ne_bytes(word(1)?.to_ne_bytes()));
    let sign = word(2)?;
    let scale = word(3)?;
    let dscale = usize::from(scale);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok("NaN".to_owned()),
        0xD000 => return Ok("Infinity".to_owned()),
        0xF000 => return Ok("-Infinity".to_owned()),
        other => return Err(format!("a numeric with sign word {other:#x}")),
    }
    let digits = (0..ndigits).map(|i| word(4 + i)).collect::<Result<Vec<u16>, _>>()?;
    // The base-10000 digit at index `i` (0: weight `weight`), zero outside.
    let digit = |i: i32| {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0)
    };
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for i in 0..=weight {
            let _ = if i == 0 {
                write!(text, "{}", digit(i))
            } else {
                write!(text, "{:04}", digit(i))
            };
        }
    }
    if dscale > 0 {
        let mut fraction = String::new();
        for k in 1..=i32::from(scale.div_ceil(4)) {
            let _ = write!(fraction, "{:04}", digit(weight + k));
        }
        fraction.truncate(dscale);
        text.push('.');
        text.push_str(&fraction);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::numeric_text;

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut out = Vec::new();
        for word in [ndigits, u16::from_ne_bytes(weight.to_ne_bytes()), sign, dscale]
            .iter()
            .chain(digits)
        {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out
    }

    #[test]
    fn numerics_decode_to_their_decimal_text() {
        assert_eq!(numeric_text(&numeric(0, 0, 0, 0, &[])).unwrap(), "0");
        assert_eq!(numeric_text(&numeric(2, 1, 0, 2, &[12, 3456])).unwrap(), "123456.00");
        assert_eq!(numeric_text(&numeric(2, 0, 0x4000, 3, &[1, 2300])).unwrap(), "-1.230");
        assert_eq!(numeric_text(&numeric(1, -2, 0, 6, &[1200])).unwrap(), "0.000012");
        assert_eq!(numeric_text(&numeric(1, 2, 0, 0, &[5])).unwrap(), "500000000");
        assert_eq!(numeric_text(&numeric(0, 0, 0xC000, 0, &[])).unwrap(), "NaN");
        assert!(numeric_text(&[0, 1]).is_err());
    }
}
