//! What other processes tell this engine through Postgres notifications:
//! cancels (for the holds), new work (for executors), finished roots (for
//! whoever waits for a result), messages sent and events set (for `recv`
//! and `get_event`).
//!
//! Every notification of durable goes to one channel (`CHANNEL`) with
//! the payload `<schema> <event> <argument>`; engines of other schemas
//! ignore it. Events arrive on the owner's liveness session, which every
//! engine keeps anyway: no connection is added for them.

use tokio::sync::{broadcast, watch};

use crate::engine::lease::holds::Holds;
use crate::engine::wait::watcher::Watcher;

/// The channel of every notification durable sends (`LISTEN durable`). The
/// payload names the schema first, so engines of other schemas ignore it.
pub(crate) const CHANNEL: &str = "durable";

/// Messages and events remembered for receivers that are a little behind; a
/// receiver that falls further behind looks again, which is always right.
const BACKLOG: usize = 1024;

/// The events of one engine.
pub(crate) struct Events {
    schema: String,
    /// Bumped whenever work may have become claimable (a run queued or
    /// requeued, a run finished and freed a slot). Executors wait for it to
    /// change from the value they saw before they last claimed.
    work: watch::Sender<u64>,
    /// The runs waited for (`Run.result`, `durable.result`): a root's end
    /// has them looked at, if someone waits for it.
    results: Watcher,
    /// Ids of workflows sent a message.
    messages: broadcast::Sender<i64>,
    /// Ids of workflows that set an event.
    published: broadcast::Sender<i64>,
}

impl Events {
    pub(crate) fn new(schema: &str) -> Self {
        Events {
            schema: schema.to_owned(),
            work: watch::Sender::new(0),
            results: Watcher::new(),
            messages: broadcast::Sender::new(BACKLOG),
            published: broadcast::Sender::new(BACKLOG),
        }
    }

    /// Acts on one notification's payload.
    pub(crate) fn dispatch(&self, payload: &str, holds: &Holds) {
        let mut words = payload.splitn(3, ' ');
        let (Some(schema), Some(event), Some(argument)) = (words.next(), words.next(), words.next()) else {
            return;
        };
        if schema != self.schema {
            return;
        }
        match event {
            "cancel" => {
                if let Ok(root) = argument.parse() {
                    holds.cancelled(root);
                    self.finished(root);
                }
                self.more_work();
            }
            // Part of a tree (a child, a root without its children): its
            // holder reads which workflows; the root may be one of them.
            "cancel-part" => {
                if let Ok(root) = argument.parse() {
                    holds.part_cancelled(root);
                    self.finished(root);
                }
                self.more_work();
            }
            "queued" => self.more_work(),
            "message" | "event" => {
                if let Ok(id) = argument.parse() {
                    let sender = if event == "message" {
                        &self.messages
                    } else {
                        &self.published
                    };
                    let _ = sender.send(id);
                }
            }
            "done" => {
                if let Ok(root) = argument.parse() {
                    self.finished(root);
                }
                self.more_work();
            }
            _ => {}
        }
    }

    /// Says that work may have become claimable (also after this engine's
    /// own changes, which it need not hear back from the server).
    pub(crate) fn more_work(&self) {
        self.work.send_modify(|version| *version = version.wrapping_add(1));
    }

    /// The current work version (see `work`).
    pub(crate) fn work_version(&self) -> u64 {
        *self.work.borrow()
    }

    /// Waits until the work version differs from `seen`, or `timeout` ran
    /// out; true if it changed.
    pub(crate) async fn work_changed(&self, seen: u64, timeout: std::time::Duration) -> bool {
        let mut receiver = self.work.subscribe();
        let changed = receiver.wait_for(|version| *version != seen);
        matches!(tokio::time::timeout(timeout, changed).await, Ok(Ok(_)))
    }

    /// A receiver of the ids of workflows sent a message from now on.
    pub(crate) fn messages(&self) -> broadcast::Receiver<i64> {
        self.messages.subscribe()
    }

    /// A receiver of the ids of workflows that set an event from now on.
    pub(crate) fn events(&self) -> broadcast::Receiver<i64> {
        self.published.subscribe()
    }

    /// The runs waited for (see `wait::watcher`).
    pub(crate) fn results(&self) -> &Watcher {
        &self.results
    }

    /// Tells the waiters of `root` that it finished.
    fn finished(&self, root: i64) {
        self.results.finished(root);
    }
}
