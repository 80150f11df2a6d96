//! The workflows this engine holds, one handle each.
//!
//! The database fences writes per owner (one per engine), so it cannot keep
//! two handles of one engine apart: that is done here. A root name is
//! reserved before its start statement runs, and stays taken while a handle
//! of its tree lives. A second start of it in this engine is `WorkflowBusy`,
//! as it is from another process.
//!
//! A start that finds the name being started here waits for that start to
//! end before it decides: busy if the name is held then (its row is
//! committed, so whoever is told it is busy finds it), or it reserves the
//! name itself (that start failed, or found the workflow completed).
//!
//! A hold ends when its root finishes, when the tree is released (its run
//! ended without finishing, or every handle of it is gone), when a write
//! learns the lease is lost, or when the whole tree is cancelled. From then
//! on every handle of the tree refuses new work, so no further body runs.
//!
//! A cancel of part of the tree (a child by its path, or a root without its
//! children) does not end the hold: the hold keeps the ids of the
//! workflows of its tree that are cancelled, and the handle of each of
//! them refuses new work while the others go on. They are learned from
//! this engine's own cancels, from the `cancel-part` notification (then
//! read from the database: the payload names the root only) and from a
//! write refused as cancelled (then read again, for the rest of the tree).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

use crate::engine::Engine;
use crate::engine::error::EngineError;
use crate::engine::workflow::{Status, WorkflowId};

/// The roots this engine holds or is starting, by name.
#[derive(Default)]
pub(crate) struct Holds {
    slots: Mutex<HashMap<String, Slot>>,
    /// The hold of an isolated run claimed to run alone: while it lasts,
    /// this engine claims nothing else.
    solo: Mutex<Weak<State>>,
}

enum Slot {
    /// A start statement for this name is in flight; notified when it ends.
    Starting(Arc<Notify>),
    Held(Weak<State>),
}

impl Holds {
    fn slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves the root `name` for a start, or `HeldHere` (`WorkflowBusy`
    /// in Python) when a handle of this engine holds it. A start of it in
    /// flight here is waited for first (see the module's doc).
    pub(crate) async fn reserve(self: &Arc<Self>, name: &str) -> Result<Reservation, EngineError> {
        loop {
            let starting = match self.try_reserve(name) {
                Ok(reserved) => return reserved,
                Err(starting) => starting,
            };
            starting.await;
        }
    }

    /// `reserve` without waiting: `HeldHere` also while a start of `name`
    /// is in flight here (for claims, which give the run back instead).
    pub(crate) fn reserve_now(self: &Arc<Self>, name: &str) -> Result<Reservation, EngineError> {
        self.try_reserve(name)
            .unwrap_or_else(|_| Err(EngineError::HeldHere { name: name.to_owned() }))
    }

    /// The reservation (or `HeldHere`), or, while a start of `name` is in
    /// flight, a future that resolves when it ends.
    fn try_reserve(self: &Arc<Self>, name: &str) -> Result<Result<Reservation, EngineError>, OwnedNotified> {
        // Declared before the lock, so dropped after it: the last reference
        // to a hold may go here, and its drop takes the lock itself.
        let upgraded;
        let mut slots = self.slots();
        let taken = match slots.get(name) {
            // Made under the lock, so that it sees the start's end, which
            // takes the lock to notify (`notify_waiters` reaches every
            // future made before it, polled or not).
            Some(Slot::Starting(done)) => return Err(Arc::clone(done).notified_owned()),
            Some(Slot::Held(state)) => {
                upgraded = state.upgrade();
                upgraded.as_ref().is_some_and(|state| state.end().is_none())
            }
            None => false,
        };
        if taken {
            return Ok(Err(EngineError::HeldHere { name: name.to_owned() }));
        }
        slots.insert(name.to_owned(), Slot::Starting(Arc::new(Notify::new())));
        Ok(Ok(Reservation {
            holds: Arc::clone(self),
            name: Some(name.to_owned()),
        }))
    }

    /// Ends every hold of the root `root_id` with `Cancelled` (a cancel
    /// notification, or this engine's own cancel).
    pub(crate) fn cancelled(&self, root_id: i64) {
        for state in self.live() {
            if state.root.id == root_id {
                state.end_with(End::Lost(EngineError::Cancelled { workflow_id: root_id }));
            }
        }
    }

    /// Marks the workflows `ids` of the tree of `root_id` cancelled: their
    /// handles stop, the rest of the tree goes on (a cancel of a part).
    pub(crate) fn cancelled_part(&self, root_id: i64, ids: &[i64]) {
        for state in self.live() {
            if state.root.id == root_id {
                state.mark_cancelled(ids);
            }
        }
    }

    /// Learns from the database which workflows of the tree of `root_id`
    /// are cancelled (a `cancel-part` notification named it), in the
    /// background.
    pub(super) fn part_cancelled(&self, root_id: i64) {
        for state in self.live() {
            if state.root.id == root_id {
                Hold(state).learn_cancels();
            }
        }
    }

    /// Ends the hold of the root `root` (at its epoch): it completed or failed.
    pub(crate) fn finished(&self, root: WorkflowId, status: Status) {
        for state in self.live() {
            if state.root == root {
                state.end_with(End::Finished(status));
            }
        }
    }

    /// The names of the roots held or being started now.
    pub(crate) fn names(&self) -> Vec<String> {
        self.slots().keys().cloned().collect()
    }

    /// True when no root is held or being started.
    pub(crate) fn is_empty(&self) -> bool {
        let live = self.live();
        let starting = self.slots().values().any(|slot| matches!(slot, Slot::Starting(_)));
        !starting && live.iter().all(|state| state.end().is_some())
    }

    /// Marks `hold` as the run this engine runs alone (see `solo`).
    pub(crate) fn set_solo(&self, hold: &Hold) {
        *self.solo.lock().unwrap_or_else(PoisonError::into_inner) = Arc::downgrade(&hold.0);
    }

    /// True while the run this engine runs alone is held.
    pub(crate) fn solo(&self) -> bool {
        let solo = self.solo.lock().unwrap_or_else(PoisonError::into_inner).upgrade();
        solo.is_some_and(|state| state.end().is_none())
    }

    /// Gives up every tree this engine still holds (or holds cancelled),
    /// as their runs ending would: for a clean close. Their handles then
    /// refuse work with `Closed`.
    pub(crate) async fn release_all(&self) {
        let held: Vec<Hold> = self
            .slots()
            .values()
            .filter_map(|slot| match slot {
                Slot::Held(state) => state.upgrade().map(Hold),
                Slot::Starting(_) => None,
            })
            .collect();
        for hold in held {
            if hold.0.end_with(End::Lost(EngineError::Closed)) || hold.0.owes_cancel_release() {
                hold.0.engine.release(hold.0.root).await;
            }
        }
    }

    /// The ids of the roots held now.
    pub(super) fn root_ids(&self) -> Vec<i64> {
        self.live().iter().map(|state| state.root.id).collect()
    }

    /// Every hold that lasts. The caller drops them after the lock is gone.
    fn live(&self) -> Vec<Arc<State>> {
        self.slots()
            .values()
            .filter_map(|slot| match slot {
                Slot::Held(state) => state.upgrade(),
                Slot::Starting(_) => None,
            })
            .collect()
    }

    /// Frees `name` if `state` still holds it.
    fn free(&self, name: &str, state: *const State) {
        let mut slots = self.slots();
        if matches!(slots.get(name), Some(Slot::Held(held)) if held.as_ptr() == state) {
            slots.remove(name);
        }
    }
}

/// A root name reserved for a start in flight. Dropped unused, it frees
/// the name; `hold` turns it into the hold of the started workflow.
pub(crate) struct Reservation {
    holds: Arc<Holds>,
    name: Option<String>,
}

impl Reservation {
    pub(crate) fn hold(mut self, engine: Engine, root: WorkflowId) -> Hold {
        let name = self.name.take().unwrap_or_default();
        let state = Arc::new(State {
            engine,
            name: name.clone(),
            root,
            end: Mutex::new(None),
            cancelled: Mutex::new(HashSet::new()),
            cancel_acknowledged: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            changed: tokio::sync::watch::Sender::new(()),
        });
        let replaced = self.holds.slots().insert(name, Slot::Held(Arc::downgrade(&state)));
        if let Some(Slot::Starting(done)) = replaced {
            done.notify_waiters();
        }
        Hold(state)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            let mut slots = self.holds.slots();
            if matches!(slots.get(&name), Some(Slot::Starting(_))) {
                if let Some(Slot::Starting(done)) = slots.remove(&name) {
                    done.notify_waiters();
                }
            }
        }
    }
}

/// Why a hold ended.
#[derive(Debug, Clone)]
enum End {
    /// The root completed or failed.
    Finished(Status),
    /// Given up: released, or the run ended without finishing.
    Released,
    /// Taken away: the lease was lost or the workflow cancelled.
    Lost(EngineError),
}

/// The hold of one root and its tree, shared by every handle of the tree in
/// this engine. When the last handle goes while the hold has not ended, the
/// tree is released in the database, so anyone may take it over at once.
#[derive(Clone)]
pub struct Hold(Arc<State>);

struct State {
    engine: Engine,
    name: String,
    root: WorkflowId,
    end: Mutex<Option<End>>,
    /// The workflows of the tree cancelled while the hold lasts (a cancel
    /// of part of the tree): their handles refuse new work.
    cancelled: Mutex<HashSet<i64>>,
    /// Set once a cancelled tree was given up in the database (its holder
    /// stopped): a cancelled run keeps its queue slot until then.
    cancel_acknowledged: AtomicBool,
    /// Set by a graceful shutdown: no new step, child or retry starts, while
    /// what runs may still save its result.
    draining: AtomicBool,
    /// Told when the hold ends or starts draining (see `Hold::stopped`).
    changed: tokio::sync::watch::Sender<()>,
}

impl State {
    fn end(&self) -> Option<End> {
        self.end.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Records the first end; frees the root's name. False if it had ended.
    fn end_with(&self, end: End) -> bool {
        let mut slot = self.end.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() {
            return false;
        }
        *slot = Some(end);
        drop(slot);
        self.changed.send_replace(());
        self.engine.holds().free(&self.name, self);
        true
    }

    /// Adds `ids` to the cancelled workflows; tells the waits when one is new.
    fn mark_cancelled(&self, ids: &[i64]) {
        let mut cancelled = self.cancelled.lock().unwrap_or_else(PoisonError::into_inner);
        let before = cancelled.len();
        cancelled.extend(ids);
        let added = cancelled.len() > before;
        drop(cancelled);
        if added {
            self.changed.send_replace(());
        }
    }

    fn is_cancelled(&self, id: i64) -> bool {
        self.cancelled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&id)
    }

    /// True, once, when the tree was cancelled and its giving up in the
    /// database is still owed (see `cancel_acknowledged`).
    fn owes_cancel_release(&self) -> bool {
        matches!(self.end(), Some(End::Lost(EngineError::Cancelled { .. })))
            && !self.cancel_acknowledged.swap(true, Ordering::Relaxed)
    }
}

impl Drop for State {
    fn drop(&mut self) {
        let end = self.end.get_mut().unwrap_or_else(PoisonError::into_inner);
        if end.is_none() {
            *end = Some(End::Released);
            self.engine.holds().free(&self.name, self);
            self.engine.release_soon(self.root);
        } else if self.owes_cancel_release() {
            self.engine.release_soon(self.root);
        }
    }
}

impl Hold {
    /// The root workflow held.
    pub fn root(&self) -> WorkflowId {
        self.0.root
    }

    /// Ok while the hold lasts and the workflow `id` of its tree is not
    /// cancelled; else why its handle may do no more.
    pub fn check(&self, id: i64) -> Result<(), EngineError> {
        match self.0.end() {
            None if self.0.is_cancelled(id) => Err(EngineError::Cancelled { workflow_id: id }),
            None if self.0.draining.load(Ordering::Relaxed) => Err(EngineError::Draining {
                name: self.0.name.clone(),
            }),
            None => Ok(()),
            Some(End::Lost(err)) => Err(err),
            Some(End::Released) => Err(EngineError::Released {
                name: self.0.name.clone(),
            }),
            Some(End::Finished(status)) => Err(EngineError::RootFinished {
                name: self.0.name.clone(),
                status: status.as_str(),
            }),
        }
    }

    /// A write learned that the workflow `id` of the tree is cancelled:
    /// its handle stops, and which others are cancelled too (all of them,
    /// when the whole tree was) is read from the database, in the
    /// background.
    pub fn cancelled(&self, id: i64) {
        self.0.mark_cancelled(&[id]);
        self.learn_cancels();
    }

    /// Reads which workflows of the tree are cancelled, in the background,
    /// and stops their handles.
    fn learn_cancels(&self) {
        let state = Arc::downgrade(&self.0);
        let engine = self.0.engine.clone();
        let root = self.0.root.id;
        engine.clone().spawn(async move {
            // Nothing learned (the database is away): each handle learns at its next write.
            if let Ok(ids) = engine.cancelled_workflows(root).await {
                if let Some(state) = state.upgrade() {
                    state.mark_cancelled(&ids);
                }
            }
        });
    }

    /// A write learned that the lease is lost: every handle of the tree stops.
    pub fn lost(&self, err: &EngineError) {
        self.0.end_with(End::Lost(err.clone()));
    }

    /// Gives the tree up: its handles stop, and the database lets anyone take
    /// it over at once. Resolves once that is committed (best effort: if the
    /// database cannot be reached, the lease runs out as for a dead process).
    pub async fn release(&self) {
        if self.0.end_with(End::Released) || self.0.owes_cancel_release() {
            self.0.engine.release(self.0.root).await;
        }
    }

    /// The tree was suspended (`Engine::suspend`), which released it in the
    /// database already: its handles stop, as after a release, and nothing
    /// more is written.
    pub fn suspended(&self) {
        self.0.end_with(End::Released);
    }

    /// `release`, without waiting for the database.
    pub fn release_soon(&self) {
        if self.0.end_with(End::Released) || self.0.owes_cancel_release() {
            self.0.engine.release_soon(self.0.root);
        }
    }

    /// Starts a graceful stop: from now on the handles of the tree start no
    /// new step, child or retry (`Draining`), while what runs finishes and
    /// saves its result; the run then ends and releases the workflow.
    pub fn drain(&self) {
        self.0.draining.store(true, Ordering::Relaxed);
        self.0.changed.send_replace(());
    }

    /// Waits until the hold ends (cancelled, lost, released, closed or
    /// finished) or the workflow `id` of its tree is cancelled: then its
    /// error (`check`'s), for the waits of that workflow to end with it.
    /// With `drain`, also returns `Ok` when a graceful stop begins, for a
    /// wait that would rather suspend than hold the stop up.
    pub async fn stopped(&self, id: i64, drain: bool) -> Result<(), EngineError> {
        let mut changes = self.0.changed.subscribe();
        loop {
            match self.check(id) {
                Err(EngineError::Draining { .. }) if drain => return Ok(()),
                Ok(()) | Err(EngineError::Draining { .. }) => {}
                Err(err) => return Err(err),
            }
            if changes.changed().await.is_err() {
                return Err(EngineError::Closed);
            }
        }
    }

    /// True once a graceful stop began (see `drain`).
    pub fn draining(&self) -> bool {
        self.0.draining.load(Ordering::Relaxed)
    }

    /// True when the hold was released (explicitly or by its run ending).
    pub fn is_released(&self) -> bool {
        matches!(self.0.end(), Some(End::Released))
    }
}

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hold")
            .field("name", &self.0.name)
            .field("root", &self.0.root)
            .field("end", &self.0.end())
            .finish()
    }
}
