//! Group commit of requests that each make or find one root row by name:
//! one task per kind of request (root starts, `checkpoint::starter`; single
//! enqueues, `queue::enqueuer`) that sends the requests made at the same
//! time as one statement, hence one transaction and one WAL flush, and
//! gives each caller the row of its name.
//!
//! There is no timer, as in the checkpoint writer: the task takes whatever
//! is queued and sends it. A request alone goes out at once (as the kind's
//! single-row statement); while batches are in flight (a few at once, each
//! on its own pooled connection, so one slow batch does not hold up the
//! next), new requests queue up for the next batch.
//!
//! Names in one statement must be distinct (an upsert touches a row once),
//! so a repeated name waits for the next batch: the second request of a
//! name finds the row of the first, as it would if each were sent alone.
//! Each batch is sorted by name, so that two processes lock the rows they
//! share in the same order and never deadlock over them. A transient error
//! sends the batch again on a fresh connection within the reconnect
//! timeout; a batch the server refuses for good is sent again one request
//! at a time, so every caller gets the answer its own statement would have
//! got, and one bad request fails no other.

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

use crate::engine::connect::pool::{Connections, no_answer};
use crate::engine::connect::retry::{Backoff, is_transient};
use crate::engine::error::EngineError;
use crate::engine::workflow::col;

/// Most requests in one statement; more wait for the next batch.
const MAX_BATCH: usize = 1000;

/// Most bytes of names and values in one statement, unless a single
/// request is larger (it then goes alone): far below Postgres' 1 GB per
/// message.
const MAX_BATCH_BYTES: usize = 64 << 20;

/// Most batches of one kind in flight at once, each on a connection of its
/// own (fewer when the pool is small: the checkpoint writer keeps one).
const MAX_IN_FLIGHT: usize = 4;

/// A statement's parameters, borrowed from its batch.
pub(crate) type Params<'a> = Vec<Box<dyn ToSql + Sync + Send + 'a>>;

/// What a kind of request sends.
pub(crate) trait Kind: Send + Sync + 'static {
    /// What a request carries besides its name.
    type Item: Send + Sync + 'static;

    /// The bytes of a request's values besides its name, to bound a batch.
    fn size(item: &Self::Item) -> usize;

    /// What the request of `name` does, as errors word it ("starting
    /// workflow \"a\"").
    fn what(name: &str) -> String;

    /// What a batch of `count` requests does ("starting 5 workflows").
    fn what_many(count: usize) -> String;

    /// The statement that sends `batch` (distinct names, sorted, at least
    /// one request), and its parameters. Each of its rows has a `name`.
    fn statement<'a>(&'a self, batch: &'a [Request<Self::Item>]) -> (&'a str, Params<'a>);
}

/// One request, and where its row goes.
pub(crate) struct Request<T> {
    pub name: String,
    pub item: T,
    reply: oneshot::Sender<Result<Row, EngineError>>,
}

/// What the task needs besides its queue and its kind.
pub(crate) struct Setup {
    pub connections: Connections,
    pub target: Arc<str>,
    /// How long to keep retrying through a lost connection before failing,
    /// and the longest wait for the answer to one statement.
    pub reconnect_timeout: Duration,
    /// The pool's size.
    pub max_connections: usize,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    requests: AtomicU64,
}

/// The sending side, owned by the engine.
pub(crate) struct Group<K: Kind> {
    tx: mpsc::UnboundedSender<Request<K::Item>>,
    counters: Arc<Counters>,
}

impl<K: Kind> Group<K> {
    /// Starts the task on the current tokio runtime.
    pub(crate) fn spawn(setup: Setup, kind: K) -> Group<K> {
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        tokio::spawn(run(rx, Arc::new(setup), Arc::new(kind), Arc::clone(&counters)));
        Group { tx, counters }
    }

    /// Statements committed, and requests answered in them.
    pub(crate) fn stats(&self) -> (u64, u64) {
        (
            self.counters.batches.load(Ordering::Relaxed),
            self.counters.requests.load(Ordering::Relaxed),
        )
    }

    /// Sends the request of `name` with the next batch; its row, once
    /// committed.
    pub(crate) async fn send(&self, name: &str, item: K::Item) -> Result<Row, EngineError> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            name: name.to_owned(),
            item,
            reply,
        };
        self.tx.send(request).map_err(|_| EngineError::Closed)?;
        answer.await.map_err(|_| EngineError::Closed)?
    }
}

async fn run<K: Kind>(
    mut rx: mpsc::UnboundedReceiver<Request<K::Item>>,
    setup: Arc<Setup>,
    kind: Arc<K>,
    counters: Arc<Counters>,
) {
    let max_in_flight = MAX_IN_FLIGHT.min(setup.max_connections.saturating_sub(1)).max(1);
    let mut queue = VecDeque::new();
    let mut in_flight = FuturesUnordered::new();
    let mut senders_gone = false;
    loop {
        while let Ok(request) = rx.try_recv() {
            queue.push_back(request);
        }
        while in_flight.len() < max_in_flight {
            let batch = take_batch::<K>(&mut queue);
            if batch.is_empty() {
                break;
            }
            in_flight.push(execute(&setup, &*kind, batch, &counters));
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
/// `MAX_BATCH` requests and `MAX_BATCH_BYTES` (or a single larger one), no
/// name twice (a repeated name stays queued, in order), and none whose
/// caller has given up.
fn take_batch<K: Kind>(queue: &mut VecDeque<Request<K::Item>>) -> Vec<Request<K::Item>> {
    let mut batch: Vec<Request<K::Item>> = Vec::new();
    let mut names = HashSet::new();
    let mut bytes = 0;
    let mut deferred = VecDeque::new();
    while let Some(request) = queue.pop_front() {
        if request.reply.is_closed() {
            continue;
        }
        let size = request.name.len() + K::size(&request.item);
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
async fn execute<K: Kind>(setup: &Setup, kind: &K, batch: Vec<Request<K::Item>>, counters: &Counters) {
    match send(setup, kind, &batch).await {
        // Refused for good: nothing was written. Alone, each request gets
        // its own answer, and one bad request fails no other.
        Err(Failure::Database(err)) if batch.len() > 1 && !is_transient(&err) => {
            log::warn!(
                "the server refused a batch ({}); sending its requests one by one",
                EngineError::database(K::what_many(batch.len()), &err)
            );
            for request in batch {
                let sent = send(setup, kind, std::slice::from_ref(&request)).await;
                settle::<K>(setup, vec![request], sent, counters);
            }
        }
        sent => settle::<K>(setup, batch, sent, counters),
    }
}

/// Gives each caller of a batch its row, or the error its request reports.
fn settle<K: Kind>(setup: &Setup, batch: Vec<Request<K::Item>>, sent: Result<Vec<Row>, Failure>, counters: &Counters) {
    match sent {
        Ok(rows) => {
            counters.batches.fetch_add(1, Ordering::Relaxed);
            counters.requests.fetch_add(batch.len() as u64, Ordering::Relaxed);
            answer::<K>(batch, rows);
        }
        Err(failure) => {
            for request in batch {
                let err = failure.error(setup, &K::what(&request.name));
                let _ = request.reply.send(Err(err));
            }
        }
    }
}

/// Gives each caller its row, found by name.
fn answer<K: Kind>(batch: Vec<Request<K::Item>>, rows: Vec<Row>) {
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
        let row = by_name
            .remove(&request.name)
            .ok_or_else(|| EngineError::Unexpected(format!("{} returned no row", K::what(&request.name))));
        let _ = request.reply.send(row);
    }
}

/// Why a batch failed, to be told to each of its callers.
enum Failure {
    /// The same for every request: the engine closed, no connection to be
    /// had (worded for the batch).
    Engine(EngineError),
    /// No answer within the reconnect timeout.
    NoAnswer,
    /// The server's refusal, or the last of the transient errors.
    Database(tokio_postgres::Error),
}

impl Failure {
    /// The error a request reports, worded as every statement of the
    /// engine words it (see `retrying!`); `context` says what it did.
    fn error(&self, setup: &Setup, context: &str) -> EngineError {
        match self {
            Failure::Engine(err) => err.clone(),
            Failure::NoAnswer => no_answer(&setup.target, context, setup.reconnect_timeout),
            Failure::Database(err) => EngineError::database(context, err),
        }
    }
}

/// Sends the batch's statement, again on a fresh connection while the
/// server is unreachable or the transaction lost a race: what `retrying!`
/// does for one statement, with the errors kept for each caller to word.
/// Sending it again is as safe as sending one request again: a request
/// repeated after a commit whose answer was lost finds its own row.
async fn send<K: Kind>(setup: &Setup, kind: &K, batch: &[Request<K::Item>]) -> Result<Vec<Row>, Failure> {
    let (text, params) = kind.statement(batch);
    let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
    let context = match batch {
        [one] => K::what(&one.name),
        _ => K::what_many(batch.len()),
    };
    let give_up = Instant::now() + setup.reconnect_timeout;
    let mut backoff = Backoff::until(give_up);
    loop {
        // Past `give_up`, the backoff below gives up with the error.
        let failure = match setup.connections.get(&context, give_up, setup.reconnect_timeout).await {
            Err(EngineError::Closed) => return Err(Failure::Engine(EngineError::Closed)),
            Err(err) => Failure::Engine(err),
            Ok(client) => {
                let answered = tokio::time::timeout_at(give_up.into(), async {
                    let statement = client.prepare_cached(text).await?;
                    client.query(&statement, &params).await
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

    /// Requests that carry nothing (batches are never sent here).
    struct Names;

    impl Kind for Names {
        type Item = ();
        fn size((): &()) -> usize {
            0
        }
        fn what(name: &str) -> String {
            format!("naming {name:?}")
        }
        fn what_many(count: usize) -> String {
            format!("naming {count}")
        }
        fn statement<'a>(&'a self, _: &'a [Request<()>]) -> (&'a str, Params<'a>) {
            ("SELECT 1", Vec::new())
        }
    }

    fn request(name: &str) -> (Request<()>, oneshot::Receiver<Result<Row, EngineError>>) {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            name: name.to_owned(),
            item: (),
            reply,
        };
        (request, answer)
    }

    fn names(batch: &[Request<()>]) -> Vec<&str> {
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
        let batch = take_batch::<Names>(&mut queue);
        assert_eq!(names(&batch), ["a", "b", "c"]);
        let rest: Vec<&str> = queue.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(rest, ["b"]);
    }

    #[test]
    fn a_request_whose_caller_is_gone_is_not_sent() {
        let (gone, answer) = request("gone");
        drop(answer);
        let (kept, _answer) = request("kept");
        let mut queue = VecDeque::from([gone, kept]);
        assert_eq!(names(&take_batch::<Names>(&mut queue)), ["kept"]);
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
        assert_eq!(take_batch::<Names>(&mut queue).len(), MAX_BATCH);
        assert_eq!(queue.len(), 1);
    }
}
