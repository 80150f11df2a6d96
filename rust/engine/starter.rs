//! Group commit for starting root workflows: one task per engine that sends
//! the root starts made at the same time as one statement (`sql`'s
//! `start_roots`; a start alone goes as `start_root`), hence one
//! transaction and one WAL flush.
//!
//! Why: each start was its own statement and commit, so a burst of starts
//! cost a commit each, and took as long as the ten times as many steps
//! that followed them (those are group-committed by the writer). Measured
//! (release build, 200 concurrent `Ctx.start`, medians of 5, see
//! doc/adr/013-root-starts-group-committed.md): 1,700 -> 5,700 starts/s, in 5 statements instead of
//! 200; one start at a time costs what it did.
//!
//! There is no timer, as in the checkpoint writer: the task takes whatever
//! is queued and sends it. A start alone goes out at once, as before; while
//! batches are in flight (a few at once, each on its own pooled connection,
//! so one slow batch does not hold up the next), new starts queue up for
//! the next batch. Each row is created or taken over exactly as by a start
//! of its own; a caller gets its row back, and `Engine::start_root` reads
//! it as before.
//!
//! Names in one statement must be distinct (an upsert touches a row once):
//! the engine reserves a name per start (`holds`), but a start given up
//! while queued frees its name early, so a repeated name waits for the next
//! batch. Each batch is sorted by name, so that two processes lock the rows
//! they share in the same order and never deadlock over them. A batch the
//! server refuses for good is sent again one start at a time, so every
//! caller gets the answer its own statement would have got.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::Object;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::error::EngineError;
use super::jsonb::JsonText;
use super::pool::{Connections, no_answer};
use super::retry::{Backoff, is_transient};
use super::sql::Statements;
use super::workflow::col;

/// Most starts in one statement; more wait for the next batch.
const MAX_BATCH: usize = 1000;

/// Most bytes of names and inputs in one statement, unless a single start
/// is larger (it then goes alone): far below Postgres' 1 GB per message.
const MAX_BATCH_BYTES: usize = 64 << 20;

/// Most batches in flight at once, each on a connection of its own (fewer
/// when the pool is small: the checkpoint writer keeps one connection).
const MAX_IN_FLIGHT: usize = 4;

/// What the task needs besides its queue.
pub(crate) struct Setup {
    pub connections: Connections,
    pub sql: Arc<Statements>,
    pub target: Arc<str>,
    pub owner: String,
    /// How long to keep retrying through a lost connection before failing,
    /// and the longest wait for the answer to one statement.
    pub reconnect_timeout: Duration,
    /// The pool's size.
    pub max_connections: usize,
}

/// One root start, and where its row goes.
struct Request {
    name: String,
    input: JsonText,
    deadline: Option<f64>,
    workflow: Option<String>,
    reply: oneshot::Sender<Result<Row, EngineError>>,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    starts: AtomicU64,
}

/// The sending side, owned by the engine.
pub(crate) struct Starter {
    tx: mpsc::UnboundedSender<Request>,
    counters: Arc<Counters>,
}

impl Starter {
    /// Starts the task on the current tokio runtime.
    pub(crate) fn spawn(setup: Setup) -> Starter {
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        tokio::spawn(run(rx, Arc::new(setup), Arc::clone(&counters)));
        Starter { tx, counters }
    }

    /// Statements sent (each one commit) and root starts answered in them.
    pub(crate) fn stats(&self) -> (u64, u64) {
        (
            self.counters.batches.load(Ordering::Relaxed),
            self.counters.starts.load(Ordering::Relaxed),
        )
    }

    /// Creates the root `name` or takes the existing row over (the claim
    /// rules of `sql::ROOT_CLAIM`), and returns the row, once committed.
    pub(crate) async fn start(
        &self,
        name: &str,
        input: &JsonText,
        deadline: Option<f64>,
        workflow: Option<&str>,
    ) -> Result<Row, EngineError> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            name: name.to_owned(),
            input: input.clone(),
            deadline,
            workflow: workflow.map(str::to_owned),
            reply,
        };
        self.tx.send(request).map_err(|_| EngineError::Closed)?;
        answer.await.map_err(|_| EngineError::Closed)?
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Request>, setup: Arc<Setup>, counters: Arc<Counters>) {
    let max_in_flight = MAX_IN_FLIGHT.min(setup.max_connections.saturating_sub(1)).max(1);
    let mut queue = VecDeque::new();
    let mut in_flight = FuturesUnordered::new();
    let mut senders_gone = false;
    loop {
        while let Ok(request) = rx.try_recv() {
            queue.push_back(request);
        }
        while in_flight.len() < max_in_flight {
            let batch = take_batch(&mut queue);
            if batch.is_empty() {
                break;
            }
            in_flight.push(execute(&setup, batch, &counters));
        }
        if senders_gone && in_flight.is_empty() {
            return; // nothing is queued either: it would have been sent
        }
        tokio::select! {
            Some(()) = in_flight.next() => {}
            request = rx.recv(), if !senders_gone => match request {
                Some(request) => queue.push_back(request),
                None => senders_gone = true,
            },
        }
    }
}

/// Takes the next batch from the front of the queue, sorted by name: up to
/// `MAX_BATCH` starts and `MAX_BATCH_BYTES` (or a single larger start), no
/// name twice (a repeated name stays queued, in order), and none whose
/// caller has given up.
fn take_batch(queue: &mut VecDeque<Request>) -> Vec<Request> {
    let mut batch: Vec<Request> = Vec::new();
    let mut names = HashSet::new();
    let mut bytes = 0;
    let mut deferred = VecDeque::new();
    while let Some(request) = queue.pop_front() {
        if request.reply.is_closed() {
            continue;
        }
        let size = request.name.len() + request.input.as_str().len();
        if batch.len() >= MAX_BATCH || (!batch.is_empty() && bytes + size > MAX_BATCH_BYTES) {
            queue.push_front(request);
            break;
        }
        if names.contains(request.name.as_str()) {
            deferred.push_back(request);
            continue;
        }
        names.insert(request.name.clone());
        bytes += size;
        batch.push(request);
    }
    deferred.append(queue);
    *queue = deferred;
    batch.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    batch
}

/// Runs one batch and answers each of its callers.
async fn execute(setup: &Setup, batch: Vec<Request>, counters: &Counters) {
    match send(setup, &batch).await {
        // Refused for good: nothing was written. Alone, each start gets
        // its own answer, and one bad start fails no other.
        Err(Failure::Database(err)) if batch.len() > 1 && !is_transient(&err) => {
            log::warn!(
                "the server refused a batch of {} workflow starts ({}); sending them one by one",
                batch.len(),
                EngineError::database("starting workflows", &err)
            );
            for request in batch {
                let sent = send(setup, std::slice::from_ref(&request)).await;
                settle(setup, vec![request], sent, counters);
            }
        }
        sent => settle(setup, batch, sent, counters),
    }
}

/// Gives each caller of a batch its row, or the error its start reports.
fn settle(setup: &Setup, batch: Vec<Request>, sent: Result<Vec<Row>, Failure>, counters: &Counters) {
    match sent {
        Ok(rows) => {
            counters.batches.fetch_add(1, Ordering::Relaxed);
            counters.starts.fetch_add(batch.len() as u64, Ordering::Relaxed);
            answer(batch, rows);
        }
        Err(failure) => {
            for request in batch {
                let err = failure.error(setup, &request.name);
                let _ = request.reply.send(Err(err));
            }
        }
    }
}

/// Gives each caller its row, found by name.
fn answer(batch: Vec<Request>, rows: Vec<Row>) {
    let mut by_name = HashMap::with_capacity(rows.len());
    for row in rows {
        match col::<String>(&row, "name") {
            Ok(name) => {
                by_name.insert(name, row);
            }
            Err(err) => {
                for request in batch {
                    let _ = request.reply.send(Err(err.clone()));
                }
                return;
            }
        }
    }
    for request in batch {
        let row = by_name.remove(&request.name).ok_or_else(|| {
            EngineError::Unexpected(format!("the start of workflow {:?} returned no row", request.name))
        });
        let _ = request.reply.send(row);
    }
}

/// Why a batch failed, to be told to each of its callers.
enum Failure {
    /// The same for every start: the engine closed, no connection to be had
    /// (worded for the batch).
    Engine(EngineError),
    /// No answer within the reconnect timeout.
    NoAnswer,
    /// The server's refusal, or the last of the transient errors.
    Database(tokio_postgres::Error),
}

impl Failure {
    /// The error the start of `name` reports, worded as every statement of
    /// the engine words it (see `retrying!`).
    fn error(&self, setup: &Setup, name: &str) -> EngineError {
        let context = format!("starting workflow {name:?}");
        match self {
            Failure::Engine(err) => err.clone(),
            Failure::NoAnswer => no_answer(&setup.target, &context, setup.reconnect_timeout),
            Failure::Database(err) => EngineError::database(&context, err),
        }
    }
}

/// Sends the batch's statement, again on a fresh connection while the
/// server is unreachable or the transaction lost a race: what `retrying!`
/// does for one statement, with the errors kept for each caller to word.
/// Sending it again is as safe as it was for one start: a start repeated
/// after a commit whose answer was lost takes its own row again.
async fn send(setup: &Setup, batch: &[Request]) -> Result<Vec<Row>, Failure> {
    let names: Vec<&str> = batch.iter().map(|r| r.name.as_str()).collect();
    let inputs: Vec<&JsonText> = batch.iter().map(|r| &r.input).collect();
    let deadlines: Vec<Option<f64>> = batch.iter().map(|r| r.deadline).collect();
    let workflows: Vec<Option<&str>> = batch.iter().map(|r| r.workflow.as_deref()).collect();
    let batched: [&(dyn ToSql + Sync); 5] = [&names, &inputs, &setup.owner, &deadlines, &workflows];
    let single: [&(dyn ToSql + Sync); 5];
    // A start alone costs what it did before batching: the batched
    // statement's join costs about 50 µs more for one row.
    let (text, params) = match batch {
        [one] => {
            single = [&one.name, &one.input, &setup.owner, &one.deadline, &one.workflow];
            (&setup.sql.start_root, &single)
        }
        _ => (&setup.sql.start_roots, &batched),
    };
    let give_up = Instant::now() + setup.reconnect_timeout;
    let mut backoff = Backoff::until(give_up);
    loop {
        let context = match names.as_slice() {
            [name] => format!("starting workflow {name:?}"),
            _ => format!("starting {} workflows", names.len()),
        };
        // Past `give_up`, the backoff below gives up with the error.
        let failure = match setup.connections.get(&context, give_up, setup.reconnect_timeout).await {
            Err(EngineError::Closed) => return Err(Failure::Engine(EngineError::Closed)),
            Err(err) => Failure::Engine(err),
            Ok(client) => {
                let answered = tokio::time::timeout_at(give_up.into(), async {
                    let statement = client.prepare_cached(text).await?;
                    client.query(&statement, params).await
                });
                match answered.await {
                    Ok(Ok(rows)) => return Ok(rows),
                    Ok(Err(err)) if is_transient(&err) => {
                        log::warn!(
                            "{}; retrying for up to {} s",
                            EngineError::database(&context, &err),
                            setup.reconnect_timeout.as_secs_f64()
                        );
                        Failure::Database(err)
                    }
                    Ok(Err(err)) => return Err(Failure::Database(err)),
                    Err(_) => {
                        // It may be stuck: never reuse it.
                        drop(Object::take(client));
                        return Err(Failure::NoAnswer);
                    }
                }
            }
        };
        if !backoff.wait().await {
            return Err(failure);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str) -> (Request, oneshot::Receiver<Result<Row, EngineError>>) {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            name: name.to_owned(),
            input: JsonText("null".into()),
            deadline: None,
            workflow: None,
            reply,
        };
        (request, answer)
    }

    fn names(batch: &[Request]) -> Vec<&str> {
        batch.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn a_batch_is_sorted_and_a_repeated_name_waits_for_the_next() {
        let mut answers = Vec::new();
        let mut queue = VecDeque::new();
        for name in ["b", "a", "b", "c"] {
            let (request, answer) = request(name);
            answers.push(answer);
            queue.push_back(request);
        }
        let batch = take_batch(&mut queue);
        assert_eq!(names(&batch), ["a", "b", "c"]);
        let rest: Vec<&str> = queue.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(rest, ["b"]);
    }

    #[test]
    fn a_start_whose_caller_is_gone_is_not_sent() {
        let (gone, answer) = request("gone");
        drop(answer);
        let (kept, _answer) = request("kept");
        let mut queue = VecDeque::from([gone, kept]);
        assert_eq!(names(&take_batch(&mut queue)), ["kept"]);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_batch_is_bounded_by_count() {
        let mut answers = Vec::new();
        let mut queue = VecDeque::new();
        for i in 0..=MAX_BATCH {
            let (request, answer) = request(&format!("w{i}"));
            answers.push(answer);
            queue.push_back(request);
        }
        assert_eq!(take_batch(&mut queue).len(), MAX_BATCH);
        assert_eq!(queue.len(), 1);
    }
}
