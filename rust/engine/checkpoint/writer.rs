//! The checkpoint writer: one task per engine, on one connection, that turns
//! every queued step record and workflow result into one statement and one
//! commit.
//!
//! There is no timer. The writer takes whatever is queued and sends it;
//! while a batch that someone waits for is in flight, the next batch queues
//! up. At low load a record is written at once (no added latency); under
//! load many workflows share each commit (group commit). A caller's future
//! resolves only after the commit that holds its record.
//!
//! Batches of `running` markers alone (nobody waits for them) do not hold up
//! the next batch: it is pipelined behind them on the connection, so a
//! step's marker and its result cost one round trip between them, not two.
//! Measured on one workflow of 1000 sequential steps: 1750 -> 2300 steps/s.
//!
//! Every record is fenced on its workflow's lease (see `FLUSH`). When a
//! connection breaks mid-batch the batch is sent again on a fresh one: the
//! statement is idempotent under the same lease epoch, so a batch that did
//! commit before the break changes nothing the second time.
//!
//! A batch mixes records of many workflows, so one bad record must not fail
//! the others: a batch the server refuses for good is split in halves, and
//! the halves sent again, until the records at fault stand alone and fail
//! alone. A batch is bounded by bytes as well as by count, far below what a
//! statement may carry (1 GB).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Statement;
use tokio_postgres::types::ToSql;

use crate::engine::connect::pool::{checkout, no_answer};
use crate::engine::connect::retry::{Backoff, is_transient};
use crate::engine::error::EngineError;
use crate::engine::sql::{Sql, Statements};
use crate::engine::values::jsonb::JsonText;
use crate::engine::workflow::{Status, WorkflowId, col, refusal, vanished};

/// Most records in one statement; more wait for the next flush.
const MAX_BATCH: usize = 1000;

/// Most bytes of names and values in one statement, unless a single record
/// is larger (it then goes alone). Values may be up to 256 MiB each (what
/// jsonb holds); a statement must stay well below Postgres' 1 GB.
const MAX_BATCH_BYTES: usize = 64 << 20;

/// Most batches in flight on the connection at once.
const MAX_IN_FLIGHT: usize = 8;

/// How long a backlog of nothing but `running` markers (nobody waits for
/// them) is held back before it is sent. A step whose body ends sooner has
/// its marker superseded by its result in the same batch: one commit per
/// step instead of two. Under load nothing is held, since markers ride in
/// the batches that go out anyway. What it changes: a process killed
/// within this time of a step's start leaves no trace of that attempt, so
/// the step runs again under the same attempt number.
const MARKER_HOLD: Duration = Duration::from_millis(5);

/// How a step or workflow ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The JSON result.
    Completed(JsonText),
    /// The JSON error record.
    Failed(JsonText),
}

impl Outcome {
    /// The status this outcome gives its row.
    pub fn status(&self) -> Status {
        match self {
            Outcome::Completed(_) => Status::Completed,
            Outcome::Failed(_) => Status::Failed,
        }
    }

    fn into_columns(self) -> (Option<JsonText>, Option<JsonText>) {
        match self {
            Outcome::Completed(output) => (Some(output), None),
            Outcome::Failed(error) => (None, Some(error)),
        }
    }
}

/// What the group commits did so far. The writer: statements committed,
/// records written in them, and batches split to isolate a record the
/// server refused. The root starts (`starter.rs`) and the single enqueues
/// (`queue::enqueuer`): statements committed and requests answered in them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub commits: u64,
    pub records: u64,
    pub splits: u64,
    pub start_batches: u64,
    pub starts: u64,
    pub enqueue_batches: u64,
    pub enqueues: u64,
    /// Calls to the database outside the group commits (each a
    /// round trip, most of them one transaction): reads, claims, recovery
    /// passes, waits, sends...
    pub calls: u64,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    records: AtomicU64,
    splits: AtomicU64,
}

type Reply = oneshot::Sender<Result<(), EngineError>>;

enum Op {
    /// `outcome: None` is the `running` marker written before a step's body
    /// runs; usually nobody waits for it (`reply: None`).
    Step {
        workflow: WorkflowId,
        name: String,
        attempt: i32,
        outcome: Option<Outcome>,
        reply: Option<Reply>,
    },
    Workflow {
        workflow: WorkflowId,
        outcome: Outcome,
        reply: Reply,
    },
}

impl Op {
    /// A step's `running` marker that nobody waits for.
    fn is_unawaited_marker(&self) -> bool {
        matches!(
            self,
            Op::Step {
                outcome: None,
                reply: None,
                ..
            }
        )
    }
}

/// What the writer task needs besides its queue.
pub(crate) struct Setup {
    pub pool: Pool,
    pub sql: Arc<Statements>,
    pub target: Arc<str>,
    pub owner: String,
    pub schema: String,
    /// How long to keep retrying through a lost connection before failing,
    /// and the longest wait for the answer to one statement.
    pub reconnect_timeout: Duration,
}

/// The sending side, cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::UnboundedSender<Op>,
    counters: Arc<Counters>,
}

impl Writer {
    /// Starts the writer task on the current tokio runtime.
    pub(crate) fn spawn(setup: Setup) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        tokio::spawn(run(rx, setup, Arc::clone(&counters)));
        Writer { tx, counters }
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            records: self.counters.records.load(Ordering::Relaxed),
            splits: self.counters.splits.load(Ordering::Relaxed),
            ..Stats::default()
        }
    }

    /// Queues the `running` marker of a step without waiting for it.
    pub(super) fn step_started(&self, workflow: WorkflowId, name: &str, attempt: i32) -> Result<(), EngineError> {
        self.send(Op::Step {
            workflow,
            name: name.to_owned(),
            attempt,
            outcome: None,
            reply: None,
        })
    }

    /// Writes the `running` marker of a step; resolves once it is committed.
    pub(super) async fn step_started_durably(
        &self,
        workflow: WorkflowId,
        name: String,
        attempt: i32,
    ) -> Result<(), EngineError> {
        self.committed(|reply| Op::Step {
            workflow,
            name,
            attempt,
            outcome: None,
            reply: Some(reply),
        })
        .await
    }

    /// Saves a step's outcome; resolves once it is committed.
    pub(super) async fn step_finished(
        &self,
        workflow: WorkflowId,
        name: String,
        attempt: i32,
        outcome: Outcome,
    ) -> Result<(), EngineError> {
        self.committed(|reply| Op::Step {
            workflow,
            name,
            attempt,
            outcome: Some(outcome),
            reply: Some(reply),
        })
        .await
    }

    /// Saves a workflow's outcome; resolves once it is committed.
    pub(super) async fn workflow_finished(&self, workflow: WorkflowId, outcome: Outcome) -> Result<(), EngineError> {
        self.committed(|reply| Op::Workflow {
            workflow,
            outcome,
            reply,
        })
        .await
    }

    /// Queues the record `make` builds around a reply channel, and waits for
    /// the answer: sent after the commit that holds the record.
    async fn committed(&self, make: impl FnOnce(Reply) -> Op) -> Result<(), EngineError> {
        let (reply, done) = oneshot::channel();
        self.send(make(reply))?;
        done.await.map_err(|_| EngineError::Closed)?
    }

    fn send(&self, op: Op) -> Result<(), EngineError> {
        self.tx.send(op).map_err(|_| EngineError::Closed)
    }
}

/// Work the writer holds between connections.
#[derive(Default)]
struct Queue {
    /// Records not yet in a batch, in arrival order.
    backlog: VecDeque<Op>,
    /// Batches to send before the backlog: those whose connection broke
    /// before they were answered, and the halves of split batches.
    retry: VecDeque<Batch>,
    /// Set at the first failure since the last success: when to give up.
    outage: Option<Backoff>,
    /// When the first marker came into a backlog that had been emptied
    /// into a batch (None: since then, none came, or the backlog was sent).
    marker_since: Option<Instant>,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.backlog.is_empty() && self.retry.is_empty()
    }

    /// Moves every record waiting in the channel into the backlog.
    fn take_queued(&mut self, rx: &mut mpsc::UnboundedReceiver<Op>) {
        while let Ok(op) = rx.try_recv() {
            self.push(op);
        }
    }

    fn push(&mut self, op: Op) {
        if self.marker_since.is_none() && op.is_unawaited_marker() {
            self.marker_since = Some(Instant::now());
        }
        self.backlog.push_back(op);
    }

    /// The next batch: retried ones first, then from the backlog.
    fn next_batch(&mut self) -> Option<Batch> {
        if let Some(batch) = self.retry.pop_front() {
            return Some(batch);
        }
        if self.backlog.is_empty() {
            return None;
        }
        self.marker_since = None;
        Some(Batch::take(&mut self.backlog))
    }

    /// Until when to hold the backlog back (see `MARKER_HOLD`): while it
    /// holds nothing but unawaited markers, the first of which came less
    /// than `MARKER_HOLD` ago.
    fn held_until(&self) -> Option<Instant> {
        let until = self.marker_since? + MARKER_HOLD;
        let only_markers = self.retry.is_empty() && self.backlog.iter().all(Op::is_unawaited_marker);
        (only_markers && until > Instant::now()).then_some(until)
    }

    /// Answers everything held with `err`.
    fn fail_all(&mut self, err: &EngineError) {
        for batch in self.retry.drain(..) {
            batch.settle(&Flushed::failed(err));
        }
        while !self.backlog.is_empty() {
            Batch::take(&mut self.backlog).settle(&Flushed::failed(err));
        }
    }

    /// Waits before the next try; false once the outage has lasted too long.
    async fn wait_out(&mut self, timeout: Duration) -> bool {
        self.outage
            .get_or_insert_with(|| Backoff::until(Instant::now() + timeout))
            .wait()
            .await
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Op>, setup: Setup, counters: Arc<Counters>) {
    let mut queue = Queue::default();
    let waited = setup.reconnect_timeout.as_secs_f64();
    // Since when no connection could be had, for the log line of its end.
    let mut cut_off: Option<Instant> = None;
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(op) => queue.push(op),
                None => return, // every sender is gone and nothing is left
            }
        }
        let conn = match checkout(&setup.pool, &setup.target).await {
            Ok(conn) => conn,
            Err(err) => {
                if !matches!(err, EngineError::Closed) && cut_off.is_none() {
                    cut_off = Some(Instant::now());
                    log::warn!("cannot save checkpoints: {err}; trying again for up to {waited} s");
                }
                // Closed for good, or down for longer than we wait: tell
                // whoever waits, including what queued up meanwhile.
                if matches!(err, EngineError::Closed) || !queue.wait_out(setup.reconnect_timeout).await {
                    if !matches!(err, EngineError::Closed) {
                        log::error!("gave up saving checkpoints after {waited} s: {err}");
                    }
                    queue.take_queued(&mut rx);
                    queue.fail_all(&err);
                    queue.outage = None;
                    cut_off = None;
                }
                continue;
            }
        };
        if let Some(since) = cut_off.take() {
            log::info!(
                "saving checkpoints again, after {:.1} s without a connection",
                since.elapsed().as_secs_f64()
            );
        }
        match serve(&conn, &mut rx, &mut queue, &setup, &counters).await {
            Stop::Finished => return,
            Stop::PoolClosed => drop(conn),
            // The connection may still hold unanswered requests: never reuse it.
            Stop::Stuck => {
                log::warn!("Postgres did not answer a checkpoint within {waited} s; dropping that connection");
                drop(Object::take(conn));
            }
            Stop::ConnectionLost(err) => {
                drop(conn);
                log::warn!(
                    "lost the connection while saving checkpoints ({err}); sending {} unanswered batches again \
                     on a new connection, for up to {waited} s",
                    queue.retry.len()
                );
                if !queue.wait_out(setup.reconnect_timeout).await {
                    log::error!("gave up saving checkpoints after {waited} s: {err}");
                    queue.take_queued(&mut rx);
                    queue.fail_all(&err);
                    queue.outage = None;
                }
            }
        }
    }
}

/// Why `serve` returned.
enum Stop {
    /// Every sender is gone and everything queued was written.
    Finished,
    /// The connection broke; the unanswered batches are in `queue.retry`.
    ConnectionLost(EngineError),
    /// A statement got no answer within the reconnect timeout; its waiters
    /// were told so.
    Stuck,
    PoolClosed,
}

/// Writes batches on one connection until it breaks, the pool closes, or
/// every sender is gone. Starts the next batch at once unless a batch that
/// someone waits for is still in flight.
async fn serve(
    client: &Object,
    rx: &mut mpsc::UnboundedReceiver<Op>,
    queue: &mut Queue,
    setup: &Setup,
    counters: &Counters,
) -> Stop {
    let statement = match client.prepare_cached(&setup.sql.flush).await {
        Ok(statement) => statement,
        Err(err) => return Stop::ConnectionLost(EngineError::database("saving checkpoints", &err)),
    };
    let mut in_flight = FuturesOrdered::new();
    let mut awaited_in_flight = false;
    let mut senders_gone = false;
    loop {
        queue.take_queued(rx);
        // Nothing is held back once every sender is gone: it would be lost.
        let mut held = None;
        while !awaited_in_flight && in_flight.len() < MAX_IN_FLIGHT {
            held = queue.held_until().filter(|_| !senders_gone);
            if held.is_some() {
                break;
            }
            let Some(batch) = queue.next_batch() else { break };
            awaited_in_flight = batch.anyone_waits();
            in_flight.push_back(execute(client, &statement, setup, batch));
        }
        if in_flight.is_empty() {
            if senders_gone {
                return Stop::Finished;
            }
            if setup.pool.is_closed() {
                return Stop::PoolClosed; // let the connection go
            }
        }
        tokio::select! {
            biased;
            Some((batch, flushed)) = in_flight.next() => {
                if batch.anyone_waits() {
                    awaited_in_flight = false;
                }
                match &flushed.result {
                    Err(Failure::Transient(err)) => {
                        // Keep this batch and every later one (in order) for a fresh connection.
                        let err = err.clone();
                        queue.retry.push_back(batch);
                        while let Some((batch, flushed)) = in_flight.next().await {
                            match flushed.result {
                                Err(Failure::Transient(_)) => queue.retry.push_back(batch),
                                _ => done(batch, &flushed, queue, counters),
                            }
                        }
                        return Stop::ConnectionLost(err);
                    }
                    Err(Failure::Stuck(_)) => {
                        batch.settle(&flushed);
                        while let Some((batch, flushed)) = in_flight.next().await {
                            match flushed.result {
                                Err(Failure::Transient(_)) => queue.retry.push_back(batch),
                                _ => done(batch, &flushed, queue, counters),
                            }
                        }
                        return Stop::Stuck;
                    }
                    _ => done(batch, &flushed, queue, counters),
                }
            }
            // Not while a batch someone waits for is in flight: nothing new
            // could go out before its answer, and not listening spares the
            // I/O thread a wake-up per record (the answer's turn of the loop
            // takes what queued meanwhile).
            op = rx.recv(), if !senders_gone && !awaited_in_flight => match op {
                Some(op) => queue.push(op),
                None => senders_gone = true,
            },
            () = tokio::time::sleep_until(held.unwrap_or_else(Instant::now).into()), if held.is_some() => {}
        }
    }
}

/// Settles a batch that was answered, or splits one the server refused for
/// good, so that its halves are sent again before anything else.
fn done(batch: Batch, flushed: &Flushed, queue: &mut Queue, counters: &Counters) {
    match &flushed.result {
        Err(Failure::Fatal(err)) if batch.len() > 1 => {
            log::warn!(
                "the server refused a batch of {} checkpoints ({err}); splitting it to find the one at fault",
                batch.len()
            );
            counters.splits.fetch_add(1, Ordering::Relaxed);
            let (first, second) = batch.split();
            queue.retry.push_front(second);
            queue.retry.push_front(first);
        }
        Ok(applied) => {
            queue.outage = None;
            counters.commits.fetch_add(1, Ordering::Relaxed);
            let written = applied.steps.len() + applied.workflows.len();
            counters.records.fetch_add(written as u64, Ordering::Relaxed);
            batch.settle(flushed);
        }
        Err(_) => batch.settle(flushed),
    }
}

/// Why a flush failed: worth retrying on a fresh connection; no answer in
/// time; or refused by the server.
#[derive(Debug, Clone)]
enum Failure {
    Transient(EngineError),
    Stuck(EngineError),
    Fatal(EngineError),
}

/// A batch's outcome: which records were written, and why the others were refused.
struct Flushed {
    result: Result<Applied, Failure>,
    /// For workflows whose records were refused: the reason (lease lost,
    /// cancelled, finished); `None` when the workflow itself was fine.
    refused: HashMap<i64, Option<EngineError>>,
}

impl Flushed {
    fn failed(err: &EngineError) -> Self {
        Flushed {
            result: Err(Failure::Fatal(err.clone())),
            refused: HashMap::new(),
        }
    }
}

/// Which records the flush statement wrote.
struct Applied {
    steps: HashSet<(i64, String)>,
    workflows: HashSet<i64>,
}

/// Runs one batch's statement and, if some records were refused, finds out
/// why; all within the reconnect timeout.
async fn execute(client: &Object, statement: &Statement, setup: &Setup, batch: Batch) -> (Batch, Flushed) {
    let answered = async {
        let result = flush(client, statement, setup, &batch).await;
        let refused = match &result {
            Ok(applied) => {
                let epochs = batch.refused(applied);
                if epochs.is_empty() {
                    HashMap::new()
                } else {
                    match diagnose(client, &setup.sql, &setup.owner, &epochs).await {
                        Ok(refused) => refused,
                        Err(failure) => {
                            return Flushed {
                                result: Err(failure),
                                refused: HashMap::new(),
                            };
                        }
                    }
                }
            }
            Err(_) => HashMap::new(),
        };
        Flushed { result, refused }
    };
    let flushed = tokio::time::timeout(setup.reconnect_timeout, answered)
        .await
        .unwrap_or_else(|_| Flushed {
            result: Err(Failure::Stuck(no_answer(
                &setup.target,
                "saving checkpoints",
                setup.reconnect_timeout,
            ))),
            refused: HashMap::new(),
        });
    (batch, flushed)
}

fn failure(context: &str, err: &tokio_postgres::Error) -> Failure {
    let error = EngineError::database(context, err);
    if is_transient(err) {
        Failure::Transient(error)
    } else {
        Failure::Fatal(error)
    }
}

async fn flush(client: &Object, statement: &Statement, setup: &Setup, batch: &Batch) -> Result<Applied, Failure> {
    let durability = batch.synchronous_commit();
    let steps = &batch.steps;
    let workflows = &batch.workflows;
    let step_parent: Vec<i64> = steps.iter().map(|s| s.workflow.id).collect();
    let step_root: Vec<i64> = steps.iter().map(|s| s.workflow.root_id).collect();
    let step_name: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    let step_status: Vec<&str> = steps.iter().map(|s| s.status.as_str()).collect();
    let step_attempt: Vec<i32> = steps.iter().map(|s| s.attempt).collect();
    let step_output: Vec<Option<&JsonText>> = steps.iter().map(|s| s.output.as_ref()).collect();
    let step_error: Vec<Option<&JsonText>> = steps.iter().map(|s| s.error.as_ref()).collect();
    let step_epoch: Vec<i64> = steps.iter().map(|s| s.workflow.epoch).collect();
    let wf_id: Vec<i64> = workflows.iter().map(|w| w.workflow.id).collect();
    let wf_status: Vec<&str> = workflows.iter().map(|w| w.status.as_str()).collect();
    let wf_output: Vec<Option<&JsonText>> = workflows.iter().map(|w| w.output.as_ref()).collect();
    let wf_error: Vec<Option<&JsonText>> = workflows.iter().map(|w| w.error.as_ref()).collect();
    let wf_epoch: Vec<i64> = workflows.iter().map(|w| w.workflow.epoch).collect();
    let params: [&(dyn ToSql + Sync); 16] = [
        &step_parent,
        &step_root,
        &step_name,
        &step_status,
        &step_attempt,
        &step_output,
        &step_error,
        &step_epoch,
        &wf_id,
        &wf_status,
        &wf_output,
        &wf_error,
        &wf_epoch,
        &setup.owner,
        &durability,
        &setup.schema,
    ];
    let rows = client
        .query(statement, &params)
        .await
        .map_err(|e| failure("saving checkpoints", &e))?;
    let mut applied = Applied {
        steps: HashSet::new(),
        workflows: HashSet::new(),
    };
    for row in &rows {
        let kind: &str = col(row, "kind").map_err(Failure::Fatal)?;
        let id: i64 = col(row, "id").map_err(Failure::Fatal)?;
        if kind == "s" {
            applied.steps.insert((id, col(row, "name").map_err(Failure::Fatal)?));
        } else {
            applied.workflows.insert(id);
        }
    }
    Ok(applied)
}

/// Why records of these workflows (id -> the epoch they were written under)
/// were refused.
async fn diagnose(
    client: &Object,
    sql: &Statements,
    owner: &str,
    epochs: &HashMap<i64, i64>,
) -> Result<HashMap<i64, Option<EngineError>>, Failure> {
    let ids: Vec<i64> = epochs.keys().copied().collect();
    let rows = client
        .query(&sql.diagnose, &[&ids, &owner])
        .await
        .map_err(|e| failure("checking why checkpoints were refused", &e))?;
    let mut reasons: HashMap<i64, Option<EngineError>> = ids.iter().map(|&id| (id, Some(vanished(id)))).collect();
    for row in &rows {
        let id: i64 = col(row, "id").map_err(Failure::Fatal)?;
        let epoch = epochs.get(&id).copied().unwrap_or_default();
        let (id, reason) = refusal(row, epoch, "record").map_err(Failure::Fatal)?;
        reasons.insert(id, reason);
    }
    Ok(reasons)
}

/// A step row to write: its marker, or its outcome (a marker merged into
/// the outcome that followed it in the same batch).
struct StepRecord {
    workflow: WorkflowId,
    name: String,
    attempt: i32,
    status: Status,
    output: Option<JsonText>,
    error: Option<JsonText>,
    reply: Option<Reply>,
}

/// A workflow's outcome to write.
struct WorkflowRecord {
    workflow: WorkflowId,
    status: Status,
    output: Option<JsonText>,
    error: Option<JsonText>,
    reply: Reply,
}

/// Records of one flush, and who waits for them.
#[derive(Default)]
struct Batch {
    steps: Vec<StepRecord>,
    step_index: HashMap<(i64, String), usize>,
    workflows: Vec<WorkflowRecord>,
    wf_seen: HashSet<i64>,
    /// Bytes of names and values held.
    bytes: usize,
}

/// Bytes an operation adds to a statement (names and values; the rest is small).
fn op_bytes(op: &Op) -> usize {
    let outcome_bytes = |outcome: Option<&Outcome>| match outcome {
        Some(Outcome::Completed(text) | Outcome::Failed(text)) => text.as_str().len(),
        None => 0,
    };
    match op {
        Op::Step { name, outcome, .. } => name.len() + outcome_bytes(outcome.as_ref()),
        Op::Workflow { outcome, .. } => outcome_bytes(Some(outcome)),
    }
}

impl Batch {
    /// Takes up to `MAX_BATCH` records (and `MAX_BATCH_BYTES`, or a single
    /// larger record) from the front of the backlog. A record that would
    /// touch a row twice in one statement (Postgres refuses that) stays in
    /// the backlog, in order, for the next flush.
    fn take(backlog: &mut VecDeque<Op>) -> Batch {
        let mut batch = Batch::default();
        let mut deferred = VecDeque::new();
        while let Some(op) = backlog.pop_front() {
            let bytes = op_bytes(&op);
            let full = batch.len() >= MAX_BATCH || (batch.len() > 0 && batch.bytes + bytes > MAX_BATCH_BYTES);
            if full {
                backlog.push_front(op);
                break;
            }
            if let Err(op) = batch.add(op) {
                deferred.push_back(op);
            }
        }
        deferred.append(backlog);
        *backlog = deferred;
        batch
    }

    fn len(&self) -> usize {
        self.steps.len() + self.workflows.len()
    }

    fn add(&mut self, op: Op) -> Result<(), Op> {
        let bytes = op_bytes(&op);
        match op {
            Op::Step {
                workflow,
                name,
                attempt,
                outcome,
                reply,
            } => {
                let key = (workflow.id, name);
                if let Some(&i) = self.step_index.get(&key) {
                    // An unawaited marker in this batch is superseded by
                    // whatever comes later for the same step; anything that
                    // someone waits for is never superseded.
                    if self.steps[i].reply.is_some() {
                        let (_, name) = key;
                        return Err(Op::Step {
                            workflow,
                            name,
                            attempt,
                            outcome,
                            reply,
                        });
                    }
                    self.steps[i].set(workflow, attempt, outcome, reply);
                } else {
                    let mut record = StepRecord {
                        workflow,
                        name: key.1.clone(),
                        attempt,
                        status: Status::Running,
                        output: None,
                        error: None,
                        reply: None,
                    };
                    record.set(workflow, attempt, outcome, reply);
                    self.step_index.insert(key, self.steps.len());
                    self.steps.push(record);
                }
            }
            Op::Workflow {
                workflow,
                outcome,
                reply,
            } => {
                if !self.wf_seen.insert(workflow.id) {
                    return Err(Op::Workflow {
                        workflow,
                        outcome,
                        reply,
                    });
                }
                let status = outcome.status();
                let (output, error) = outcome.into_columns();
                self.workflows.push(WorkflowRecord {
                    workflow,
                    status,
                    output,
                    error,
                    reply,
                });
            }
        }
        self.bytes += bytes;
        Ok(())
    }

    /// The records again, as operations: a merged marker is its outcome.
    fn into_ops(self) -> Vec<Op> {
        let steps = self.steps.into_iter().map(|s| Op::Step {
            workflow: s.workflow,
            name: s.name,
            attempt: s.attempt,
            outcome: match s.status {
                Status::Completed => Some(Outcome::Completed(s.output.unwrap_or_else(|| JsonText("null".into())))),
                Status::Failed => Some(Outcome::Failed(s.error.unwrap_or_else(|| JsonText("null".into())))),
                _ => None,
            },
            reply: s.reply,
        });
        let workflows = self.workflows.into_iter().map(|w| Op::Workflow {
            workflow: w.workflow,
            outcome: match w.status {
                Status::Completed => Outcome::Completed(w.output.unwrap_or_else(|| JsonText("null".into()))),
                _ => Outcome::Failed(w.error.unwrap_or_else(|| JsonText("null".into()))),
            },
            reply: w.reply,
        });
        steps.chain(workflows).collect()
    }

    /// Two batches of about half the records each.
    fn split(self) -> (Batch, Batch) {
        let mut ops = self.into_ops();
        let second = ops.split_off(ops.len() / 2);
        let rebuild = |ops: Vec<Op>| {
            let mut batch = Batch::default();
            for op in ops {
                // Records of one batch never clash: none comes back.
                let _ = batch.add(op);
            }
            batch
        };
        (rebuild(ops), rebuild(second))
    }

    fn anyone_waits(&self) -> bool {
        !self.workflows.is_empty() || self.steps.iter().any(|s| s.reply.is_some())
    }

    /// Only markers nobody waits for: the commit need not wait for its fsync.
    fn synchronous_commit(&self) -> &'static str {
        if self.anyone_waits() { "on" } else { "off" }
    }

    /// Workflows (and the epochs written under) with an awaited record that
    /// was not written.
    fn refused(&self, applied: &Applied) -> HashMap<i64, i64> {
        let steps = self
            .steps
            .iter()
            .filter(|s| s.reply.is_some() && !applied.steps.contains(&(s.workflow.id, s.name.clone())))
            .map(|s| (s.workflow.id, s.workflow.epoch));
        let workflows = self
            .workflows
            .iter()
            .filter(|w| !applied.workflows.contains(&w.workflow.id))
            .map(|w| (w.workflow.id, w.workflow.epoch));
        steps.chain(workflows).collect()
    }

    /// Answers every waiter: ok if its row was written, else why not.
    fn settle(self, flushed: &Flushed) {
        let applied = match &flushed.result {
            Ok(applied) => applied,
            Err(Failure::Transient(err) | Failure::Stuck(err) | Failure::Fatal(err)) => {
                for reply in self.steps.into_iter().filter_map(|s| s.reply) {
                    let _ = reply.send(Err(err.clone()));
                }
                for record in self.workflows {
                    let _ = record.reply.send(Err(err.clone()));
                }
                return;
            }
        };
        let reason = |id: i64| flushed.refused.get(&id).cloned().flatten();
        for step in self.steps {
            let Some(reply) = step.reply else { continue };
            let parent = step.workflow.id;
            let answer = if applied.steps.contains(&(parent, step.name.clone())) {
                Ok(())
            } else {
                // The workflow took the write, so the step's row refused it:
                // the only such row is a child workflow of the same name.
                Err(reason(parent).unwrap_or(EngineError::DuplicateName {
                    workflow: format!("id {parent}"),
                    name: step.name,
                }))
            };
            let _ = reply.send(answer);
        }
        for record in self.workflows {
            let id = record.workflow.id;
            let answer = if applied.workflows.contains(&id) {
                Ok(())
            } else {
                Err(reason(id).unwrap_or(EngineError::NotRunning {
                    workflow_id: id,
                    what: format!("{} status", record.status.as_str()),
                }))
            };
            let _ = record.reply.send(answer);
        }
    }
}

impl StepRecord {
    fn set(&mut self, workflow: WorkflowId, attempt: i32, outcome: Option<Outcome>, reply: Option<Reply>) {
        self.attempt = attempt;
        self.workflow = workflow;
        if let Some(outcome) = outcome {
            self.status = outcome.status();
            let (output, error) = outcome.into_columns();
            self.output = output;
            self.error = error;
        }
        self.reply = reply;
    }
}

/// One group commit: every queued step record and workflow result in one
/// statement, hence one transaction and one WAL flush.
///
/// * `$1..$8` step rows (parent, root, name, status, attempt, output, error,
///   parent's lease epoch). A row is written only if its workflow is still
///   running under this owner and epoch (the fence); the workflow row is
///   share-locked until commit, so a takeover waits for this write or this
///   write sees the takeover. A `running` row (the marker written before a
///   step's body runs) never overwrites a finished row of the same or a later
///   attempt, so markers and results commute.
/// * `$9..$13` workflow results (id, status, output, error, epoch), fenced the
///   same way. Writing the same status again under the same epoch succeeds,
///   so a batch retried after a lost connection is idempotent.
/// * A root that finishes is announced (`<schema> done <id>`, `$16` the
///   schema) to executors and to whoever waits for its result.
/// * `$14` the owner. `$15` the `synchronous_commit` setting for this
///   transaction: `off` when the batch holds only markers nobody waits for.
///   Such a marker costs no fsync of its own; it becomes durable with the next
///   synchronous commit (WAL is flushed in order), and losing it in a crash
///   only loses the knowledge that a step had started, which a re-run
///   tolerates by design.
///
/// Returns one row per applied record: ('s', parent, name) or ('w', id, NULL).
pub(crate) const FLUSH: Sql = Sql::new(
    "
WITH durability AS (
    SELECT set_config('synchronous_commit', $15, true)
), fenced AS (
    SELECT r.* FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::int4[],
                           $6::jsonb[], $7::jsonb[], $8::int8[])
                    AS r(parent_id, root_id, name, status, attempt, output, error, epoch)
    JOIN {schema}.task AS w ON w.id = r.parent_id
    WHERE w.owner_id = $14::text::uuid AND w.lease_epoch = r.epoch AND w.status = 'running'
    FOR SHARE OF w
), steps AS (
    INSERT INTO {schema}.task AS t (parent_id, root_id, kind, name, status, attempt, output, error,
                               started_at, completed_at)
    SELECT r.parent_id, r.root_id, 'step', r.name, r.status, r.attempt, r.output, r.error,
           now(), CASE WHEN r.status <> 'running' THEN now() END
    FROM fenced AS r, durability
    ON CONFLICT (parent_id, name) WHERE parent_id IS NOT NULL DO UPDATE SET
        status = EXCLUDED.status,
        attempt = EXCLUDED.attempt,
        output = EXCLUDED.output,
        error = CASE WHEN EXCLUDED.status = 'running' THEN t.error ELSE EXCLUDED.error END,
        -- A new attempt starts now, even when its marker was merged into its outcome.
        started_at = CASE WHEN EXCLUDED.status = 'running' OR t.attempt < EXCLUDED.attempt
                          THEN now() ELSE t.started_at END,
        completed_at = EXCLUDED.completed_at,
        updated_at = now()
    WHERE t.kind = 'step'
      AND (EXCLUDED.status <> 'running' OR t.attempt < EXCLUDED.attempt)
    RETURNING t.parent_id, t.name
), workflows AS (
    UPDATE {schema}.task AS t
    SET status = w.status, output = w.output, error = w.error,
        completed_at = now(), updated_at = now()
    FROM unnest($9::bigint[], $10::text[], $11::jsonb[], $12::jsonb[], $13::int8[])
             AS w(id, status, output, error, epoch),
         durability
    WHERE t.id = w.id AND t.kind = 'workflow'
      AND t.owner_id = $14::text::uuid AND t.lease_epoch = w.epoch
      AND (t.status = 'running' OR t.status = w.status)
    RETURNING t.id, t.parent_id IS NULL AS is_root
)
SELECT 's' AS kind, parent_id AS id, name FROM steps
UNION ALL
SELECT 'w', id, CASE WHEN is_root THEN left(pg_notify('durable', $16::text || ' done ' || id)::text, 0) END
FROM workflows",
);

/// Why writes to these workflows were refused: their status and holder.
pub(crate) const DIAGNOSE: Sql = Sql::new(
    "
SELECT id, status, (owner_id IS NOT DISTINCT FROM $2::text::uuid) AS ours, lease_epoch
FROM {schema}.task
WHERE id = ANY($1)",
);

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, outcome: Option<Outcome>, reply: Option<Reply>) -> Op {
        Op::Step {
            workflow: WorkflowId {
                id: 1,
                root_id: 1,
                epoch: 1,
            },
            name: name.to_owned(),
            attempt: 1,
            outcome,
            reply,
        }
    }

    fn take(ops: Vec<Op>) -> (Batch, VecDeque<Op>) {
        let mut backlog: VecDeque<Op> = ops.into();
        let batch = Batch::take(&mut backlog);
        (batch, backlog)
    }

    fn names(batch: &Batch) -> Vec<&str> {
        batch.steps.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn only_a_batch_of_unawaited_markers_skips_the_fsync() {
        let (markers, _) = take(vec![step("a", None, None), step("b", None, None)]);
        assert_eq!(markers.synchronous_commit(), "off");
        let (reply, _done) = oneshot::channel();
        let result = Some(Outcome::Completed(JsonText("1".into())));
        let (mixed, _) = take(vec![step("a", None, None), step("b", result, Some(reply))]);
        assert_eq!(mixed.synchronous_commit(), "on");
        let (reply, _done) = oneshot::channel();
        let (awaited_marker, _) = take(vec![step("a", None, Some(reply))]);
        assert_eq!(awaited_marker.synchronous_commit(), "on");
    }

    #[test]
    fn a_marker_merges_into_its_result_and_a_second_result_waits() {
        let result = || Some(Outcome::Completed(JsonText("1".into())));
        let (r1, _d1) = oneshot::channel();
        let (r2, _d2) = oneshot::channel();
        let (batch, rest) = take(vec![
            step("a", None, None),
            step("a", result(), Some(r1)),
            step("a", result(), Some(r2)),
            step("b", None, None),
        ]);
        assert_eq!(names(&batch), ["a", "b"]);
        let statuses: Vec<Status> = batch.steps.iter().map(|s| s.status).collect();
        assert_eq!(statuses, [Status::Completed, Status::Running]);
        assert_eq!(rest.len(), 1, "the second result of `a` goes to the next batch");
    }

    #[test]
    fn a_batch_is_bounded_by_bytes_but_takes_one_large_record_alone() {
        let big = || Some(Outcome::Completed(JsonText("x".repeat(MAX_BATCH_BYTES / 2 + 1))));
        let ops = (0..3).map(|i| step(&format!("s{i}"), big(), None)).collect();
        let (batch, rest) = take(ops);
        assert_eq!(names(&batch), ["s0"], "two halves and a bit do not fit together");
        assert_eq!(rest.len(), 2);
        let huge = Some(Outcome::Completed(JsonText("x".repeat(MAX_BATCH_BYTES + 1))));
        let (alone, rest) = take(vec![step("h", huge, None), step("small", None, None)]);
        assert_eq!((names(&alone), rest.len()), (vec!["h"], 1));
    }

    #[test]
    fn a_split_keeps_every_record_and_its_waiter() {
        let result = || Some(Outcome::Completed(JsonText("1".into())));
        let mut done = Vec::new();
        let mut ops = Vec::new();
        for i in 0..5 {
            let (reply, wait) = oneshot::channel();
            done.push(wait);
            ops.push(step(&format!("s{i}"), result(), Some(reply)));
        }
        ops.push(step("marker", None, None));
        let (batch, _) = take(ops);
        let (first, second) = batch.split();
        assert_eq!(names(&first), ["s0", "s1", "s2"]);
        assert_eq!(names(&second), ["s3", "s4", "marker"]);
        assert!(
            first
                .steps
                .iter()
                .chain(&second.steps)
                .all(|s| s.status != Status::Running || s.name == "marker")
        );
        let waiting = first
            .steps
            .iter()
            .chain(&second.steps)
            .filter(|s| s.reply.is_some())
            .count();
        assert_eq!(waiting, 5);
    }
}
