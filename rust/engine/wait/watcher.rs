//! One watcher of results per engine. Every wait for a run's end
//! (`Engine::wait_finished`: `durable.result`, `Run.result`) registers the
//! run, by name, here; one task looks at the runs for all of them, each look
//! one statement for every run it covers:
//!
//! - a new waiter's first look (the waiters that register while a look is
//!   out share the next one);
//! - the runs whose `done` (or cancel) notifications arrived together;
//! - every run waited for, once per `FALLBACK`, for the ends whose
//!   notification was lost (a liveness session that reconnected, a run
//!   finished by hand in SQL).
//!
//! No end is missed between a waiter's registration and its first look:
//! that look begins after the registration, so it sees any end committed
//! before it; an end committed after it began is notified after that
//! commit, and a notification naming an id no look has answered yet (the
//! run's first look is out) is kept until that look is answered, and its
//! run looked at again if the look saw it unfinished.
//!
//! The task runs while someone waits, and ends with the last waiter.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::engine::Engine;
use crate::engine::error::EngineError;
use crate::engine::sql::Sql;
use crate::engine::wait::results::RunState;

/// How often the runs waited for are all looked at, whether or not a
/// notification said they finished.
const FALLBACK: Duration = Duration::from_secs(1);

/// At most this many turns of the runtime are given to the notifications
/// and registrations of the moment before a look begins (as long as more
/// keep coming), so that they join it.
const GATHER_TURNS: usize = 16;

/// Reads the roots named in `$1`.
pub(crate) const RUN_STATES: Sql = Sql::new(
    "
SELECT id, name, status, output, error FROM {schema}.task WHERE parent_id IS NULL AND name = ANY($1::text[])",
);

/// What a look saw of one run: the look's number (they count up from 1),
/// and the run (`None`: there is no root of that name) or the error the
/// look ended with.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub look: u64,
    pub run: Result<Option<RunState>, EngineError>,
}

/// The runs waited for in one engine, and what its task is to look at next.
pub(crate) struct Watcher {
    state: Mutex<State>,
    /// Wakes the task: a run is due for a look, or the last waiter left.
    wake: Notify,
    #[cfg(test)]
    pub(crate) hooks: tests::Hooks,
}

#[derive(Default)]
struct State {
    /// The runs waited for, by name.
    runs: HashMap<String, Watched>,
    /// Their names by id, as looks found them: notifications name ids.
    names: HashMap<i64, String>,
    /// The runs the next look covers.
    due: HashSet<String>,
    /// Looks begun so far: the number of the latest.
    looks: u64,
    /// While a look is out, the ids heard finished that no look had
    /// answered for (see the module's comment).
    heard: Option<HashSet<i64>>,
    /// True while the task runs.
    task: bool,
}

/// One run waited for.
struct Watched {
    waiters: usize,
    /// Its id, once a look found it.
    id: Option<i64>,
    /// The latest look at it.
    seen: watch::Sender<Seen>,
}

impl Watcher {
    pub(crate) fn new() -> Self {
        Watcher {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            #[cfg(test)]
            hooks: tests::Hooks::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a waiter of the run `name` and asks for a look at it.
    /// Returns the waiter, the number of the last look begun before (its
    /// answer must come from a later one), and whether the task is to be
    /// started (it was not running).
    fn register(&self, name: &str) -> (Waiting<'_>, u64, bool) {
        let mut state = self.state();
        let run = state.runs.entry(name.to_owned()).or_insert_with(|| Watched {
            waiters: 0,
            id: None,
            seen: watch::Sender::new(Seen { look: 0, run: Ok(None) }),
        });
        run.waiters += 1;
        let seen = run.seen.subscribe();
        state.due.insert(name.to_owned());
        let start = !state.task;
        state.task = true;
        let asked = state.looks;
        drop(state);
        self.wake.notify_one();
        let waiting = Waiting {
            watcher: self,
            name: name.to_owned(),
            seen,
        };
        (waiting, asked, start)
    }

    /// Asks for a look at the run `name` (registered); returns the number
    /// of the last look begun before.
    fn ask(&self, name: &str) -> u64 {
        let mut state = self.state();
        state.due.insert(name.to_owned());
        let asked = state.looks;
        drop(state);
        self.wake.notify_one();
        asked
    }

    /// The root `root` finished (or was cancelled): its run is looked at,
    /// if someone waits for it.
    pub(crate) fn finished(&self, root: i64) {
        let mut state = self.state();
        if let Some(name) = state.names.get(&root).cloned() {
            state.due.insert(name);
            drop(state);
            self.wake.notify_one();
        } else if let Some(heard) = &mut state.heard {
            heard.insert(root);
        }
    }

    /// What the task does next: `Idle` when nobody waits (the task ends),
    /// else whether a look is due.
    fn next(&self) -> Next {
        let mut state = self.state();
        if state.runs.is_empty() {
            state.task = false;
            Next::Idle
        } else if state.due.is_empty() {
            Next::Wait
        } else {
            Next::Look
        }
    }

    /// How many runs are due for a look.
    fn due(&self) -> usize {
        self.state().due.len()
    }

    /// Begins a look: at the runs due, or at every run waited for. Returns
    /// its number and the names it covers.
    fn begin(&self, everything: bool) -> (u64, Vec<String>) {
        let mut state = self.state();
        state.looks += 1;
        state.heard = Some(HashSet::new());
        let names = if everything {
            state.due.clear();
            state.runs.keys().cloned().collect()
        } else {
            state.due.drain().collect()
        };
        (state.looks, names)
    }

    /// Tells the waiters of `names` what the look `look` saw (`rows`: the
    /// runs it found, or the error it ended with).
    fn answer(&self, look: u64, names: Vec<String>, rows: Result<Vec<(String, RunState)>, EngineError>) {
        let mut state = self.state();
        let heard = state.heard.take().unwrap_or_default();
        let State {
            runs, names: ids, due, ..
        } = &mut *state;
        let (mut found, failed): (HashMap<String, RunState>, _) = match rows {
            Ok(rows) => (rows.into_iter().collect(), None),
            Err(err) => (HashMap::new(), Some(err)),
        };
        for name in names {
            let Some(watched) = runs.get_mut(&name) else {
                continue; // its waiters left meanwhile
            };
            let run = match &failed {
                None => Ok(found.remove(&name)),
                Some(err) => Err(err.clone()),
            };
            if let Ok(now) = &run {
                let id = now.as_ref().map(|run| run.id);
                if watched.id != id {
                    if let Some(old) = watched.id {
                        ids.remove(&old);
                    }
                    if let Some(new) = id {
                        ids.insert(new, name.clone());
                    }
                    watched.id = id;
                }
                if now
                    .as_ref()
                    .is_some_and(|run| !run.finished() && heard.contains(&run.id))
                {
                    due.insert(name.clone());
                }
            }
            watched.seen.send_replace(Seen { look, run });
        }
    }

    /// A waiter left: its run is forgotten with its last waiter.
    fn leave(&self, name: &str) {
        let mut state = self.state();
        let Some(watched) = state.runs.get_mut(name) else {
            return;
        };
        watched.waiters -= 1;
        if watched.waiters > 0 {
            return;
        }
        if let Some(id) = watched.id {
            state.names.remove(&id);
        }
        state.runs.remove(name);
        state.due.remove(name);
        let idle = state.runs.is_empty();
        drop(state);
        if idle {
            self.wake.notify_one(); // the task ends
        }
    }

    /// How long between two looks at every run waited for.
    #[cfg_attr(not(test), allow(clippy::unused_self))]
    fn fallback(&self) -> Duration {
        #[cfg(test)]
        if let Some(fallback) = self.hooks.fallback() {
            return fallback;
        }
        FALLBACK
    }
}

enum Next {
    Idle,
    Wait,
    Look,
}

/// A waiter registered for one run; leaves when dropped.
pub(crate) struct Waiting<'a> {
    watcher: &'a Watcher,
    name: String,
    seen: watch::Receiver<Seen>,
}

impl Waiting<'_> {
    /// The first look at the run numbered after `look`.
    async fn after(&mut self, look: u64) -> Seen {
        match self.seen.wait_for(|seen| seen.look > look).await {
            Ok(seen) => seen.clone(),
            // The sender lives as long as a waiter of its run: never.
            Err(_) => Seen {
                look,
                run: Err(EngineError::Closed),
            },
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.watcher.leave(&self.name);
    }
}

impl Engine {
    /// Waits until the root run `name` finished, or `timeout` ran out;
    /// returns it as it then is (`None` if there is no such run). See the
    /// module's comment.
    pub async fn wait_finished(&self, name: &str, timeout: Duration) -> Result<Option<RunState>, EngineError> {
        crate::engine::validate_name("workflow", name)?;
        self.check_open()?;
        let give_up = Instant::now() + timeout;
        let watcher = self.inner.events.results();
        let (mut waiting, asked, start) = watcher.register(name);
        if start {
            self.spawn(self.clone().watch_results());
        }
        let mut seen = waiting.after(asked).await;
        loop {
            match &seen.run {
                Ok(Some(run)) if !run.finished() && Instant::now() < give_up => {}
                _ => return seen.run,
            }
            seen = match tokio::time::timeout_at(give_up.into(), waiting.after(seen.look)).await {
                Ok(next) => next,
                // The run as it is now, not as the last look saw it.
                Err(_) => return waiting.after(watcher.ask(name)).await.run,
            };
        }
    }

    /// The watcher's task: looks while someone waits (see the module's comment).
    async fn watch_results(self) {
        let watcher = self.inner.events.results();
        let mut everything_at = Instant::now() + watcher.fallback();
        loop {
            let everything = loop {
                match watcher.next() {
                    Next::Idle => return,
                    Next::Look => break false,
                    Next::Wait => {
                        let woken = tokio::time::timeout_at(everything_at.into(), watcher.wake.notified());
                        if woken.await.is_err() {
                            break true;
                        }
                    }
                }
            };
            // The notifications and registrations of the moment join the look.
            let mut due = watcher.due();
            for _ in 0..GATHER_TURNS {
                tokio::task::yield_now().await;
                let more = watcher.due();
                if more == due {
                    break;
                }
                due = more;
            }
            if everything {
                everything_at = Instant::now() + watcher.fallback();
            }
            let (look, names) = watcher.begin(everything);
            let rows = self.run_states(&names).await;
            #[cfg(test)]
            watcher.hooks.pass().await;
            watcher.answer(look, names, rows);
        }
    }

    /// The roots named `names` that exist, by name.
    async fn run_states(&self, names: &[String]) -> Result<Vec<(String, RunState)>, EngineError> {
        let rows = retrying!(self, "reading the runs waited for", |client| async {
            let statement = client.prepare_cached(&self.inner.sql.run_states).await?;
            client.query(&statement, &[&names]).await
        })?;
        rows.iter()
            .map(|row| Ok((crate::engine::workflow::col(row, "name")?, RunState::from_row(row)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::sync::watch;

    use super::{RunState, Watcher};
    use crate::engine::lease::holds::Holds;
    use crate::engine::lease::notifications::Events;
    use crate::engine::limits::MAX_WAIT;
    use crate::engine::workflow::Status;
    use crate::engine::{Engine, JsonText, Options, Outcome};

    /// What tests hold the watcher's task with.
    #[derive(Default)]
    pub(crate) struct Hooks {
        /// While a test holds it, a look that has its answer waits before
        /// it tells the waiters.
        pub(crate) gate: tokio::sync::Mutex<()>,
        /// Looks that came to the gate.
        pub(crate) arrived: watch::Sender<u64>,
        /// Replaces `FALLBACK`.
        pub(crate) fallback: Mutex<Option<Duration>>,
    }

    impl Hooks {
        pub(crate) fn fallback(&self) -> Option<Duration> {
            *self.fallback.lock().unwrap()
        }

        pub(crate) async fn pass(&self) {
            self.arrived.send_modify(|count| *count += 1);
            drop(self.gate.lock().await);
        }
    }

    fn running(id: i64) -> RunState {
        RunState {
            id,
            status: Status::Running,
            output: None,
            error: None,
        }
    }

    fn due(watcher: &Watcher) -> Vec<String> {
        let mut due: Vec<String> = watcher.state().due.iter().cloned().collect();
        due.sort();
        due
    }

    #[test]
    fn a_roots_end_has_its_own_run_looked_at_and_runs_are_forgotten_with_their_waiters() {
        let events = Events::new("app");
        let holds = Holds::default();
        let watcher = events.results();
        let (mine, _, start) = watcher.register("a");
        assert!(start, "the first waiter starts the task");
        let (also_mine, _, start) = watcher.register("a");
        assert!(!start, "one task for every waiter");
        let (other, _, _) = watcher.register("b");
        let (look, names) = watcher.begin(false);
        assert_eq!(look, 1);
        watcher.answer(
            look,
            names,
            Ok(vec![("a".into(), running(7)), ("b".into(), running(8))]),
        );
        assert!(due(watcher).is_empty());
        events.dispatch("other_schema done 7", &holds);
        events.dispatch("app done 9", &holds);
        assert!(due(watcher).is_empty(), "nobody waits for 9; 7 is another schema's");
        events.dispatch("app done 7", &holds);
        assert_eq!(due(watcher), ["a"]);
        // A cancel ends a root too.
        events.dispatch("app cancel 8", &holds);
        assert_eq!(due(watcher), ["a", "b"]);
        drop(mine);
        drop(also_mine);
        assert_eq!(due(watcher), ["b"], "a is forgotten with its last waiter");
        drop(other);
        let state = watcher.state();
        assert!(state.runs.is_empty() && state.names.is_empty() && state.due.is_empty());
    }

    fn dsn() -> String {
        std::env::var("DURABLE_TEST_DSN").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".to_owned())
    }

    /// The end of a run heard while its waiter's first look is out, after
    /// that look read the run unfinished (the look is held at the gate):
    /// the run is looked at again. No fallback comes to the rescue: its
    /// period is longer than the test's bound.
    #[tokio::test]
    async fn an_end_heard_while_the_first_look_is_out_is_not_lost() {
        let schema = format!("t_watcher_{}", std::process::id());
        let options = Options {
            schema: schema.clone(),
            ..Options::default()
        };
        let engine = Engine::connect(&dsn(), &options).await.expect("connect");
        let watcher = engine.inner.events.results();
        *watcher.hooks.fallback.lock().unwrap() = Some(Duration::from_secs(3600));
        let started = engine.start(None, "r", &JsonText("null".into()), None).await.unwrap();
        let id = started.workflow.id;
        let gate = watcher.hooks.gate.lock().await;
        let mut arrived = watcher.hooks.arrived.subscribe();
        let waiter = tokio::spawn({
            let engine = engine.clone();
            async move { engine.wait_finished("r", MAX_WAIT).await }
        });
        arrived.wait_for(|looks| *looks == 1).await.unwrap();
        engine
            .workflow_finished(started.workflow, Outcome::Completed(JsonText("1".into())))
            .await
            .unwrap();
        while !watcher.state().heard.as_ref().is_some_and(|heard| heard.contains(&id)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(gate);
        let seen = tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("the end was lost")
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            (seen.status, seen.output),
            (Status::Completed, Some(JsonText("1".into())))
        );
        drop(started);
        engine.close().await;
        let (admin, connection) = tokio_postgres::connect(&dsn(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }
}
