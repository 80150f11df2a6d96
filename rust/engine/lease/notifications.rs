//! What other processes tell this engine through Postgres notifications:
//! cancels (for the holds), new work (for executors), finished roots (for
//! whoever waits for a result), messages sent and events set (for `recv`
//! and `get_event`).
//!
//! Every notification of durable goes to one channel (`CHANNEL`) with
//! the payload `<schema> <event> <argument>`; engines of other schemas
//! ignore it. Events arrive on the owner's liveness session, which every
//! engine keeps anyway: no connection is added for them.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::sync::{broadcast, watch};

use crate::engine::lease::holds::Holds;

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
    /// Per root that someone waits for, how many wait and what tells them
    /// it finished (completed, failed or cancelled). A root's end wakes its
    /// own waiters only: a broadcast of every end to every waiter cost
    /// 2000 x 2000 wake-ups (and as many reads) when 2000 `run.result()`
    /// waited in one process (issue 12's W4: a fifth of the throughput).
    done: Mutex<HashMap<i64, (usize, watch::Sender<()>)>>,
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
            done: Mutex::new(HashMap::new()),
            messages: broadcast::Sender::new(BACKLOG),
            published: broadcast::Sender::new(BACKLOG),
        }
    }

    /// Acts on one notification's payload.
    pub(super) fn dispatch(&self, payload: &str, holds: &Holds) {
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

    /// Tells the waiters of `root` that it finished.
    fn finished(&self, root: i64) {
        if let Some((_, sender)) = self.done.lock().unwrap_or_else(PoisonError::into_inner).get(&root) {
            sender.send_replace(());
        }
    }

    /// A watch on the end of the root `root` from now on (see `FinishWatch`).
    pub(crate) fn watch_finish(&self, root: i64) -> FinishWatch<'_> {
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        let (waiters, sender) = done.entry(root).or_insert_with(|| (0, watch::Sender::new(())));
        *waiters += 1;
        FinishWatch {
            events: self,
            root,
            receiver: sender.subscribe(),
        }
    }
}

/// Waits for the end of one root; forgets it when the last watch goes.
pub(crate) struct FinishWatch<'a> {
    events: &'a Events,
    root: i64,
    receiver: watch::Receiver<()>,
}

impl FinishWatch<'_> {
    /// Waits until the root finished since the watch began or since this
    /// last returned (`false`: the watch is closed, which never happens
    /// while the engine lives).
    pub(crate) async fn finished(&mut self) -> bool {
        self.receiver.changed().await.is_ok()
    }
}

impl Drop for FinishWatch<'_> {
    fn drop(&mut self) {
        let mut done = self.events.done.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((waiters, _)) = done.get_mut(&self.root) {
            *waiters -= 1;
            if *waiters == 0 {
                done.remove(&self.root);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(events: &Events) -> usize {
        events.done.lock().unwrap().len()
    }

    #[tokio::test]
    async fn a_roots_end_wakes_its_own_waiters_only_and_is_forgotten_with_them() {
        let events = Events::new("app");
        let holds = Holds::default();
        let mut mine = events.watch_finish(7);
        let mut also_mine = events.watch_finish(7);
        let mut other = events.watch_finish(8);
        events.dispatch("other_schema done 7", &holds);
        events.dispatch("app done 9", &holds);
        events.dispatch("app done 7", &holds);
        assert!(mine.finished().await);
        assert!(also_mine.finished().await);
        assert!(!other.receiver.has_changed().unwrap(), "8 did not finish");
        // A cancel ends a root too.
        events.dispatch("app cancel 8", &holds);
        assert!(other.finished().await);
        drop(mine);
        assert_eq!(waiting(&events), 2);
        drop(also_mine);
        drop(other);
        assert_eq!(waiting(&events), 0, "nothing is kept for roots nobody waits for");
    }
}
