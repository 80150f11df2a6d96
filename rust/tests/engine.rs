//! Engine tests against a real Postgres: `$DURABLE_TEST_DSN`, else the local
//! server on 127.0.0.1:5432. Each test works in a schema of its own.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use durable::engine::{
    CancelScope, Cell, CommitError, Engine, EngineError, JsonText, Kind, LATEST_VERSION, Options, Outcome, Param,
    Parent, Status, StepVerdict, WorkflowHandle,
};
use tokio_postgres::{Client, NoTls};

fn dsn() -> String {
    std::env::var("DURABLE_TEST_DSN").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A schema name no other test (or test run) uses.
fn fresh_schema() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!(
        "t_{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

async fn admin() -> Client {
    let (client, conn) = tokio_postgres::connect(&dsn(), NoTls).await.expect("test database");
    tokio::spawn(conn);
    client
}

/// Drops its schema when dropped, also when a test fails, so that failed
/// runs leave nothing behind in the test database.
struct SchemaGuard(String);

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let statement = format!("SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {} CASCADE", self.0);
        // A thread and runtime of its own: `drop` cannot await, and the
        // test's runtime may be the one unwinding.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async { admin().await.batch_execute(&statement).await })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test schema {}: {dropped:?}", self.0);
        }
    }
}

struct Fixture {
    engine: Engine,
    admin: Client,
    schema: String,
    dropper: SchemaGuard,
}

impl Fixture {
    async fn new() -> Fixture {
        let schema = fresh_schema();
        let options = Options {
            schema: schema.clone(),
            ..Options::default()
        };
        let engine = Engine::connect(&dsn(), &options).await.expect("connect");
        Fixture {
            engine,
            admin: admin().await,
            dropper: SchemaGuard(schema.clone()),
            schema,
        }
    }

    /// (name, status, attempt, output as text) of every row under `parent`, by name.
    async fn children(&self, parent: i64) -> Vec<(String, String, i32, Option<String>)> {
        let rows = self
            .admin
            .query(
                &format!(
                    "SELECT name, status, attempt, output::text FROM {}.task WHERE parent_id = $1 ORDER BY name",
                    self.schema
                ),
                &[&parent],
            )
            .await
            .unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect()
    }

    /// Closes the engine, then drops the schema (see `SchemaGuard`).
    async fn drop_schema(self) {
        self.engine.close().await;
    }
}

fn json(text: &str) -> JsonText {
    JsonText(text.to_owned())
}

/// A workflow's path: the root's name, then each child's.
fn path(names: &[&str]) -> Vec<String> {
    names.iter().map(|&name| name.to_owned()).collect()
}

#[tokio::test]
async fn unreachable_server_is_named_without_the_password() {
    let options = Options {
        connect_timeout: std::time::Duration::from_secs(2),
        ..Options::default()
    };
    let err = Engine::connect("postgresql://someone:s3cret@127.0.0.1:1/db", &options)
        .await
        .err()
        .expect("port 1 has no Postgres");
    let text = err.to_string();
    assert!(matches!(err, EngineError::Connect { .. }), "{err:?}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

#[tokio::test]
async fn an_unknown_role_is_a_connect_error_with_its_sqlstate() {
    let config: tokio_postgres::Config = dsn().parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let dsn = format!("host={host} port={port} dbname=postgres user=no_such_role_for_durable password=s3cret-pw");
    let err = Engine::connect(&dsn, &Options::default()).await.err().unwrap();
    assert!(matches!(err, EngineError::Connect { .. }), "{err:?}");
    assert!(!err.to_string().contains("s3cret-pw"), "{err}");
    // 28000 under trust auth (no such role), 28P01 under password auth.
    assert!(matches!(err.sqlstate(), Some("28000" | "28P01")), "{err:?}");
}

#[tokio::test]
async fn invalid_schema_is_refused_before_connecting() {
    let options = Options {
        schema: "x; DROP TABLE y".to_owned(),
        ..Options::default()
    };
    let err = Engine::connect(&dsn(), &options).await.err().unwrap();
    assert!(matches!(err, EngineError::InvalidSchema(_)), "{err:?}");
}

#[tokio::test]
async fn migrations_apply_once_under_concurrent_connects() {
    let schema = fresh_schema();
    let _guard = SchemaGuard(schema.clone());
    let options = Options {
        schema: schema.clone(),
        ..Options::default()
    };
    let connects = (0..8).map(|_| {
        let options = options.clone();
        tokio::spawn(async move { Engine::connect(&dsn(), &options).await })
    });
    for handle in connects {
        handle.await.unwrap().expect("every concurrent connect succeeds");
    }
    let admin = admin().await;
    let rows = admin
        .query(&format!("SELECT version FROM {schema}.migration ORDER BY version"), &[])
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, (1..=LATEST_VERSION).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let fx = Fixture::new().await;
    fx.admin
        .batch_execute(&format!(
            "INSERT INTO {}.migration (version, name) VALUES ({}, 'from the future')",
            fx.schema,
            LATEST_VERSION + 1
        ))
        .await
        .unwrap();
    let options = Options {
        schema: fx.schema.clone(),
        ..Options::default()
    };
    let err = Engine::connect(&dsn(), &options).await.err().unwrap();
    assert_eq!(
        err,
        EngineError::SchemaTooNew {
            schema: fx.schema.clone(),
            found: LATEST_VERSION + 1,
            supported: LATEST_VERSION
        }
    );
    assert!(err.to_string().contains("Upgrade the durable package"), "{err}");
    fx.drop_schema().await;
}

#[tokio::test]
async fn start_creates_then_resumes_with_history() {
    let fx = Fixture::new().await;
    let first = fx
        .engine
        .start(None, "ingest", &json("{\"n\": 1}"), None)
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.status, Status::Running);
    assert_eq!(first.attempt, 1);
    assert!(first.history.is_empty());
    let wf = first.workflow;
    assert_eq!(wf.id, wf.root_id);

    fx.engine
        .step_finished(wf, "a".into(), 1, Outcome::Completed(json("[1, 2]")))
        .await
        .unwrap();
    fx.engine.step_started(wf, "b", 1).unwrap();
    // An awaited write after the marker proves the marker is flushed too.
    fx.engine
        .step_finished(wf, "c".into(), 1, Outcome::Failed(json("{\"type\": \"ValueError\"}")))
        .await
        .unwrap();

    drop(first); // its hold goes: the workflow may be started again
    let again = fx
        .engine
        .start(None, "ingest", &json("{\"n\": 1}"), None)
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.workflow.id, wf.id);
    assert_eq!(
        again.workflow.epoch,
        wf.epoch + 1,
        "every start takes a new lease epoch"
    );
    assert_eq!(again.attempt, 2, "an interrupted run resumes as a new attempt");
    let a = &again.history["a"];
    assert_eq!((a.kind, a.status, a.attempt), (Kind::Step, Status::Completed, 1));
    assert_eq!(a.output.as_ref().map(JsonText::as_str), Some("[1, 2]"));
    let b = &again.history["b"];
    assert_eq!((b.status, b.output.as_ref()), (Status::Running, None));
    let c = &again.history["c"];
    assert_eq!((c.status, c.output.as_ref()), (Status::Failed, None));
    fx.drop_schema().await;
}

#[tokio::test]
async fn a_different_input_is_refused_and_changes_nothing() {
    let fx = Fixture::new().await;
    let first = fx
        .engine
        .start(None, "job", &json("{\"a\": 1, \"b\": 2}"), None)
        .await
        .unwrap();
    let first_id = first.workflow.id;
    drop(first);
    // Same JSON value, other key order and spacing: the same input.
    let same = fx
        .engine
        .start(None, "job", &json("{\"b\":2,\"a\":1}"), None)
        .await
        .unwrap();
    assert_eq!(same.workflow.id, first_id);
    let err = fx
        .engine
        .start(None, "job", &json("{\"a\": 2}"), None)
        .await
        .unwrap_err();
    assert_eq!(err, EngineError::InputMismatch { name: "job".into() });
    let row = fx
        .admin
        .query_one(
            &format!("SELECT input::text, attempt FROM {}.task WHERE id = $1", fx.schema),
            &[&first_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "{\"a\": 1, \"b\": 2}");
    assert_eq!(row.get::<_, i32>(1), 2, "only the matching start counted as an attempt");
    fx.drop_schema().await;
}

#[tokio::test]
async fn a_completed_workflow_keeps_its_output_and_a_failed_one_resumes() {
    let fx = Fixture::new().await;
    let started = fx.engine.start(None, "done", &json("null"), None).await.unwrap();
    let done = started.workflow;
    fx.engine
        .workflow_finished(done, Outcome::Completed(json("\"finished\"")))
        .await
        .unwrap();
    let again = fx.engine.start(None, "done", &json("null"), None).await.unwrap();
    assert_eq!(again.status, Status::Completed);
    assert_eq!(again.attempt, 1);
    assert_eq!(again.output, Some(json("\"finished\"")));

    let broken_started = fx.engine.start(None, "broken", &json("null"), None).await.unwrap();
    let broken = broken_started.workflow;
    fx.engine
        .workflow_finished(broken, Outcome::Failed(json("{\"type\": \"KeyError\"}")))
        .await
        .unwrap();
    // Finishing twice is refused: the workflow is no longer running.
    let err = fx
        .engine
        .workflow_finished(broken, Outcome::Completed(json("1")))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::NotRunning { .. }), "{err:?}");
    drop(broken_started);
    let retried = fx.engine.start(None, "broken", &json("null"), None).await.unwrap();
    assert_eq!(
        (retried.status, retried.attempt, retried.error),
        (Status::Running, 2, None)
    );
    fx.drop_schema().await;
}

#[tokio::test]
async fn children_have_their_own_steps_and_names_are_shared_with_steps() {
    let fx = Fixture::new().await;
    let root_started = fx.engine.start(None, "root", &json("null"), None).await.unwrap();
    let root = root_started.workflow;
    let parent = Parent {
        workflow: root,
        name: "root",
    };
    let child = fx
        .engine
        .start(Some(parent), "child", &json("{\"n\": 4}"), None)
        .await
        .unwrap();
    assert!(child.created);
    assert_eq!(child.workflow.root_id, root.id);
    assert_ne!(child.workflow.id, root.id);
    fx.engine
        .step_finished(child.workflow, "notify".into(), 1, Outcome::Completed(json("true")))
        .await
        .unwrap();

    drop(root_started);
    let again = fx.engine.start(None, "root", &json("null"), None).await.unwrap();
    let (root, history) = (again.workflow, again.history.clone());
    let parent = Parent {
        workflow: root,
        name: "root",
    };
    assert_eq!(history["child"].kind, Kind::Workflow);
    assert!(!history.contains_key("notify"), "a child's steps belong to the child");

    // A step cannot take a child's name, nor a child a step's.
    let err = fx
        .engine
        .step_finished(root, "child".into(), 1, Outcome::Completed(json("1")))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::DuplicateName { .. }), "{err:?}");
    fx.engine
        .step_finished(root, "s".into(), 1, Outcome::Completed(json("1")))
        .await
        .unwrap();
    let err = fx
        .engine
        .start(Some(parent), "s", &json("null"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::DuplicateName { .. }), "{err:?}");
    fx.drop_schema().await;
}

#[tokio::test]
async fn a_late_marker_never_overwrites_a_result() {
    let fx = Fixture::new().await;
    let started = fx.engine.start(None, "w", &json("null"), None).await.unwrap();
    let wf = started.workflow;
    fx.engine
        .step_finished(wf, "s".into(), 1, Outcome::Completed(json("7")))
        .await
        .unwrap();
    fx.engine.step_started(wf, "s", 1).unwrap();
    fx.engine
        .step_finished(wf, "flush".into(), 1, Outcome::Completed(json("0")))
        .await
        .unwrap();
    let rows = fx.children(wf.id).await;
    assert_eq!(
        rows[1],
        ("s".into(), "completed".into(), 1, Some("7".into())),
        "{rows:?}"
    );
    // A marker of a later attempt does reopen it: that is a re-run.
    fx.engine.step_started(wf, "s", 2).unwrap();
    fx.engine
        .step_finished(wf, "flush2".into(), 1, Outcome::Completed(json("0")))
        .await
        .unwrap();
    let rows = fx.children(wf.id).await;
    assert_eq!((rows[2].1.as_str(), rows[2].2), ("running", 2));
    fx.drop_schema().await;
}

#[tokio::test]
async fn concurrent_checkpoints_are_all_saved() {
    let fx = Fixture::new().await;
    let engine = std::sync::Arc::new(fx.engine);
    let mut started = Vec::new();
    for w in 0..20 {
        started.push(engine.start(None, &format!("w{w}"), &json("null"), None).await.unwrap());
    }
    let workflows: Vec<_> = started.iter().map(|s| s.workflow).collect();
    let tasks: Vec<_> = workflows
        .iter()
        .flat_map(|&wf| (0..25).map(move |s| (wf, s)))
        .map(|(wf, s)| {
            let engine = std::sync::Arc::clone(&engine);
            tokio::spawn(async move {
                let name = format!("s{s}");
                engine.step_started(wf, &name, 1).unwrap();
                engine
                    .step_finished(wf, name, 1, Outcome::Completed(JsonText(s.to_string())))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let count: i64 = fx
        .admin
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.task WHERE kind = 'step' AND status = 'completed'",
                fx.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 500);
    let stats = engine.stats();
    // Markers merge into their results when they meet in a batch.
    assert!((500..=1000).contains(&stats.records), "{stats:?}");
    assert!(
        stats.commits < 100,
        "results of concurrent workflows share commits: {stats:?}"
    );
    drop(started);
    let fx = Fixture {
        engine: std::sync::Arc::into_inner(engine).unwrap(),
        admin: fx.admin,
        schema: fx.schema,
        dropper: fx.dropper,
    };
    fx.drop_schema().await;
}

#[tokio::test]
async fn names_are_validated() {
    let fx = Fixture::new().await;
    let err = fx.engine.start(None, "", &json("null"), None).await.unwrap_err();
    assert!(matches!(err, EngineError::InvalidName { .. }), "{err:?}");
    let err = fx.engine.start(None, "a\0b", &json("null"), None).await.unwrap_err();
    assert!(matches!(err, EngineError::InvalidName { .. }), "{err:?}");
    fx.drop_schema().await;
}

/// Another engine against the same schema: another process, as far as leases go.
async fn second_engine(fx: &Fixture) -> Engine {
    let options = Options {
        schema: fx.schema.clone(),
        ..Options::default()
    };
    Engine::connect(&dsn(), &options).await.expect("connect")
}

#[tokio::test]
async fn a_live_owner_makes_the_workflow_busy_for_others() {
    let fx = Fixture::new().await;
    let other = second_engine(&fx).await;
    let held = fx.engine.start(None, "w", &json("null"), None).await.unwrap();
    let err = other.start(None, "w", &json("null"), None).await.unwrap_err();
    assert_eq!(err, EngineError::WorkflowBusy { name: "w".into() });
    // Being refused changed nothing: the holder writes on.
    fx.engine
        .step_finished(held.workflow, "s".into(), 1, Outcome::Completed(json("1")))
        .await
        .unwrap();
    // A finished workflow is nobody's: the other engine replays it.
    fx.engine
        .workflow_finished(held.workflow, Outcome::Completed(json("2")))
        .await
        .unwrap();
    let replay = other.start(None, "w", &json("null"), None).await.unwrap();
    assert_eq!((replay.status, replay.output), (Status::Completed, Some(json("2"))));
    fx.drop_schema().await;
}

#[tokio::test]
async fn a_released_workflow_is_taken_over_at_once_and_its_old_handles_fenced_out() {
    let fx = Fixture::new().await;
    let other = second_engine(&fx).await;
    let started = other.start(None, "w", &json("null"), None).await.unwrap();
    let held = started.workflow;
    let tree = started.hold.clone().expect("a root taken to run is held");
    other
        .step_finished(held, "before".into(), 1, Outcome::Completed(json("1")))
        .await
        .unwrap();
    tree.release().await;
    assert!(matches!(tree.check(held.id), Err(EngineError::Released { .. })));
    let taken = fx.engine.start(None, "w", &json("null"), None).await.unwrap();
    assert_eq!(taken.workflow.epoch, held.epoch + 1);
    assert_eq!(taken.history["before"].status, Status::Completed);
    let err = other
        .step_finished(held, "late".into(), 1, Outcome::Completed(json("1")))
        .await
        .unwrap_err();
    assert_eq!(err, EngineError::LeaseLost { workflow_id: held.id });
    drop(started);
    fx.drop_schema().await;
}

#[tokio::test]
async fn an_expired_holder_cannot_write_after_a_takeover() {
    let fx = Fixture::new().await;
    let hung = second_engine(&fx).await;
    let held_started = hung.start(None, "w", &json("null"), None).await.unwrap();
    let held = held_started.workflow;
    // The holder's session lives on, but its lease ran out (a hung process).
    fx.admin
        .execute(
            &format!(
                "UPDATE {}.owner SET expires_at = now() - interval '1 second' WHERE id = $1::text::uuid",
                fx.schema
            ),
            &[&hung.owner_id()],
        )
        .await
        .unwrap();
    let taken_started = fx.engine.start(None, "w", &json("null"), None).await.unwrap();
    let taken = taken_started.workflow;
    assert_eq!(taken.epoch, held.epoch + 1);
    fx.engine
        .step_finished(taken, "s".into(), 1, Outcome::Completed(json("\"new\"")))
        .await
        .unwrap();

    let stale_step = hung
        .step_finished(held, "s".into(), 1, Outcome::Completed(json("\"stale\"")))
        .await
        .unwrap_err();
    assert_eq!(stale_step, EngineError::LeaseLost { workflow_id: held.id });
    hung.step_started(held, "t", 1).unwrap();
    let stale_finish = hung
        .workflow_finished(held, Outcome::Completed(json("\"stale\"")))
        .await
        .unwrap_err();
    assert_eq!(stale_finish, EngineError::LeaseLost { workflow_id: held.id });
    let rows = fx.children(held.id).await;
    assert_eq!(
        rows,
        [("s".into(), "completed".into(), 1, Some("\"new\"".into()))],
        "no stale write landed"
    );
    fx.drop_schema().await;
}

#[tokio::test]
async fn a_second_start_in_one_engine_is_busy_until_the_first_hold_goes() {
    let fx = Fixture::new().await;
    let first = fx.engine.start(None, "w", &json("null"), None).await.unwrap();
    let old = first.workflow;
    let err = fx.engine.start(None, "w", &json("null"), None).await.unwrap_err();
    assert_eq!(err, EngineError::HeldHere { name: "w".into() });
    drop(first);
    let second = fx.engine.start(None, "w", &json("null"), None).await.unwrap();
    let new = second.workflow;
    assert_eq!(new.epoch, old.epoch + 1);
    let err = fx
        .engine
        .step_finished(old, "s".into(), 1, Outcome::Completed(json("1")))
        .await
        .unwrap_err();
    assert_eq!(err, EngineError::LeaseLost { workflow_id: old.id });
    let parent = Parent {
        workflow: old,
        name: "w",
    };
    let err = fx
        .engine
        .start(Some(parent), "c", &json("null"), None)
        .await
        .unwrap_err();
    assert_eq!(err, EngineError::LeaseLost { workflow_id: old.id });
    fx.drop_schema().await;
}

#[tokio::test]
async fn cancelling_a_root_cancels_its_children_and_stops_their_writes() {
    let fx = Fixture::new().await;
    let started = fx.engine.start(None, "r", &json("null"), None).await.unwrap();
    let root = started.workflow;
    let parent = Parent {
        workflow: root,
        name: "r",
    };
    let child = fx
        .engine
        .start(Some(parent), "c", &json("null"), None)
        .await
        .unwrap()
        .workflow;
    assert!(fx.engine.cancel(&path(&["r"]), CancelScope::default()).await.unwrap());
    let hold = started.hold.as_ref().unwrap();
    assert_eq!(
        hold.check(root.id),
        Err(EngineError::Cancelled { workflow_id: root.id }),
        "told at once"
    );
    assert!(
        !fx.engine.cancel(&path(&["r"]), CancelScope::default()).await.unwrap(),
        "nothing left to cancel"
    );
    assert!(
        !fx.engine
            .cancel(&path(&["no-such-workflow"]), CancelScope::default())
            .await
            .unwrap()
    );
    let err = fx
        .engine
        .step_finished(child, "s".into(), 1, Outcome::Completed(json("1")))
        .await
        .unwrap_err();
    assert_eq!(err, EngineError::Cancelled { workflow_id: child.id });
    let err = fx
        .engine
        .workflow_finished(root, Outcome::Completed(json("1")))
        .await
        .unwrap_err();
    assert_eq!(err, EngineError::Cancelled { workflow_id: root.id });
    let err = fx.engine.start(None, "r", &json("null"), None).await.unwrap_err();
    assert_eq!(err, EngineError::Cancelled { workflow_id: root.id });
    fx.drop_schema().await;
}

#[tokio::test]
async fn cancelling_a_child_by_its_path_stops_it_alone() {
    let fx = Fixture::new().await;
    let started = fx.engine.start(None, "r", &json("null"), None).await.unwrap();
    let root = started.workflow;
    let parent = Parent {
        workflow: root,
        name: "r",
    };
    let start_child = |name: &'static str| {
        let engine = fx.engine.clone();
        async move {
            engine
                .start(Some(parent), name, &json("null"), None)
                .await
                .unwrap()
                .workflow
        }
    };
    let (child, sibling) = (start_child("c/d").await, start_child("e").await);
    assert!(
        !fx.engine
            .cancel(&path(&["r", "c", "d"]), CancelScope::default())
            .await
            .unwrap(),
        "a name is never split"
    );
    assert!(
        fx.engine
            .cancel(&path(&["r", "c/d"]), CancelScope::default())
            .await
            .unwrap()
    );
    let hold = started.hold.as_ref().unwrap();
    assert_eq!(
        hold.check(child.id),
        Err(EngineError::Cancelled { workflow_id: child.id })
    );
    assert_eq!(hold.check(root.id), Ok(()), "its parent goes on");
    assert_eq!(hold.check(sibling.id), Ok(()), "and so does its sibling");
    let err = fx
        .engine
        .step_finished(child, "s".into(), 1, Outcome::Completed(json("1")))
        .await
        .unwrap_err();
    assert_eq!(err, EngineError::Cancelled { workflow_id: child.id });
    fx.engine
        .step_finished(sibling, "s".into(), 1, Outcome::Completed(json("1")))
        .await
        .unwrap();
    fx.engine
        .workflow_finished(root, Outcome::Completed(json("1")))
        .await
        .unwrap();
    fx.drop_schema().await;
}

#[tokio::test]
async fn a_durable_marker_is_committed_before_it_returns() {
    let fx = Fixture::new().await;
    let started = fx.engine.start(None, "w", &json("null"), None).await.unwrap();
    let wf = started.workflow;
    fx.engine.step_started_durably(wf, "pay".into(), 1).await.unwrap();
    let rows = fx.children(wf.id).await;
    assert_eq!(rows, [("pay".into(), "running".into(), 1, None)]);
    fx.drop_schema().await;
}

#[tokio::test]
async fn a_deadline_is_kept_across_starts_and_shared_by_children() {
    let fx = Fixture::new().await;
    let first = fx
        .engine
        .start(None, "w", &json("null"), Some(std::time::Duration::from_secs(60)))
        .await
        .unwrap();
    let deadline = first.deadline.expect("a deadline");
    let left = deadline - std::time::Instant::now();
    assert!(
        left > std::time::Duration::from_secs(58) && left <= std::time::Duration::from_secs(60),
        "{left:?}"
    );
    drop(first);
    let again = fx.engine.start(None, "w", &json("null"), None).await.unwrap();
    assert!(again.deadline.is_some(), "the deadline set at creation stays");
    let parent = Parent {
        workflow: again.workflow,
        name: "w",
    };
    let child = fx.engine.start(Some(parent), "c", &json("null"), None).await.unwrap();
    assert!(child.deadline.is_some());
    let plain = fx.engine.start(None, "plain", &json("null"), None).await.unwrap();
    assert!(plain.deadline.is_none());
    fx.drop_schema().await;
}

#[tokio::test]
async fn a_tree_has_the_steps_and_children_of_each_workflow_in_order() {
    let fx = Fixture::new().await;
    let started = fx.engine.start(None, "root", &json("1"), None).await.unwrap();
    let root = started.workflow;
    let parent = Parent {
        workflow: root,
        name: "root",
    };
    fx.engine
        .step_finished(root, "b".into(), 1, Outcome::Completed(json("\"first\"")))
        .await
        .unwrap();
    let error = r#"{"type": "ValueError", "module": "builtins", "message": "no", "traceback": "Traceback..."}"#;
    fx.engine
        .step_finished(root, "a".into(), 2, Outcome::Failed(json(error)))
        .await
        .unwrap();
    let child = fx
        .engine
        .start(Some(parent), "c", &json("null"), None)
        .await
        .unwrap()
        .workflow;
    fx.engine
        .step_finished(child, "x".into(), 1, Outcome::Completed(json("2")))
        .await
        .unwrap();

    let tree = fx
        .engine
        .tree(&path(&["root"]))
        .await
        .unwrap()
        .expect("the root exists");
    assert_eq!(
        (
            tree.info.name.as_str(),
            tree.info.path.as_slice(),
            tree.info.status.as_str()
        ),
        ("root", path(&["root"]).as_slice(), "running")
    );
    let steps: Vec<_> = tree
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.status.as_str(), s.attempt))
        .collect();
    assert_eq!(
        steps,
        [("b", "completed", 1), ("a", "failed", 2)],
        "in the order first recorded"
    );
    assert_eq!(tree.steps[0].output, Some(json("\"first\"")));
    assert!(tree.steps[1].error.as_ref().unwrap().as_str().contains("ValueError"));
    assert_eq!(tree.children.len(), 1);
    let c = &tree.children[0];
    assert_eq!((c.info.name.as_str(), c.info.path.clone()), ("c", path(&["root", "c"])));
    assert_eq!(c.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["x"]);
    assert!(c.children.is_empty());

    let sub = fx
        .engine
        .tree(&path(&["root", "c"]))
        .await
        .unwrap()
        .expect("a child by its path");
    assert_eq!(sub, *c);
    assert_eq!(fx.engine.tree(&path(&["nope"])).await.unwrap(), None);
    assert_eq!(
        fx.engine.tree(&path(&["root/c"])).await.unwrap(),
        None,
        "a name is never split"
    );
    assert_eq!(
        fx.engine.tree(&path(&["root", "x"])).await.unwrap(),
        None,
        "a step is not a workflow"
    );
    assert!(matches!(
        fx.engine.tree(&path(&["root", "", "c"])).await,
        Err(EngineError::InvalidName { .. })
    ));
    assert!(matches!(
        fx.engine.tree(&path(&[])).await,
        Err(EngineError::InvalidOption(_))
    ));
    drop(started);
    fx.drop_schema().await;
}

#[tokio::test]
async fn gc_deletes_whole_finished_trees_finished_long_enough_ago_and_nothing_else() {
    let fx = Fixture::new().await;
    let mut held = Vec::new();
    for (name, outcome) in [
        ("old-done", Some(true)),
        ("old-failed", Some(false)),
        ("old-cancelled", None),
        ("old-running", None),
        ("new-done", Some(true)),
    ] {
        let started = fx.engine.start(None, name, &json("null"), None).await.unwrap();
        let root = started.workflow;
        let parent = Parent { workflow: root, name };
        let child = fx
            .engine
            .start(Some(parent), "c", &json("null"), None)
            .await
            .unwrap()
            .workflow;
        fx.engine
            .step_finished(child, "s".into(), 1, Outcome::Completed(json("1")))
            .await
            .unwrap();
        fx.engine
            .step_finished(root, "s".into(), 1, Outcome::Completed(json("1")))
            .await
            .unwrap();
        match outcome {
            Some(true) => fx
                .engine
                .workflow_finished(root, Outcome::Completed(json("1")))
                .await
                .unwrap(),
            Some(false) => fx
                .engine
                .workflow_finished(root, Outcome::Failed(json("{}")))
                .await
                .unwrap(),
            None if name == "old-cancelled" => {
                assert!(fx.engine.cancel(&path(&[name]), CancelScope::default()).await.unwrap());
            }
            None => {}
        }
        held.push(started);
    }
    // Two days ago for every old one (the running one's rows too: only its status keeps it).
    fx.admin
        .execute(
            &format!(
                "UPDATE {}.task SET completed_at = now() - interval '2 days'
                 WHERE root_id IN (SELECT id FROM {0}.task WHERE parent_id IS NULL AND name LIKE 'old-%')",
                fx.schema
            ),
            &[],
        )
        .await
        .unwrap();

    let day = std::time::Duration::from_secs(86_400);
    assert_eq!(
        fx.engine.gc(day * 3, 10).await.unwrap(),
        0,
        "nothing finished three days ago"
    );
    assert_eq!(fx.engine.gc(day, 2).await.unwrap(), 3, "in batches of two");
    let rows = fx
        .admin
        .query(
            &format!(
                "SELECT r.name, count(t.*) FROM {0}.task AS r JOIN {0}.task AS t ON t.root_id = r.id
                 WHERE r.parent_id IS NULL GROUP BY r.name ORDER BY r.name",
                fx.schema
            ),
            &[],
        )
        .await
        .unwrap();
    let left: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(left, [("new-done".to_owned(), 4), ("old-running".to_owned(), 4)]);
    let total: i64 = fx
        .admin
        .query_one(&format!("SELECT count(*) FROM {}.task", fx.schema), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 8, "no row of a deleted tree is left");
    assert!(matches!(fx.engine.gc(day, 0).await, Err(EngineError::InvalidOption(_))));
    drop(held);
    fx.drop_schema().await;
}

#[tokio::test]
async fn queues_list_their_limits_and_use() {
    use durable::engine::{ClaimLimits, EnqueueMany, QueueLimits};
    let fx = Fixture::new().await;
    let minute = std::time::Duration::from_secs(60);
    let limits = QueueLimits {
        concurrency: Some(3),
        concurrency_per_key: None,
        rates: Some(vec![(10, minute), (100, minute * 60)]),
    };
    fx.engine.create_queue("etl", &limits).await.unwrap();
    fx.engine.set_queue_paused("idle", true).await.unwrap();
    let input = json("null");
    for (name, delay) in [("a", 0), ("b", 0), ("later", 3600)] {
        let run = EnqueueMany {
            runs: &[(name, &input)],
            workflow: "app.job",
            queue: "etl",
            delay: std::time::Duration::from_secs(delay),
            run_at: None,
            priority: 0,
            key: None,
            enqueued_by: None,
        };
        fx.engine.enqueue_many(&run).await.unwrap();
    }
    let workflows = ["app.job".to_owned()];
    let claim = ClaimLimits {
        max: 1,
        workflows: &workflows,
        version: None,
        isolated: false,
    };
    let claimed = fx.engine.claim(Some("etl"), claim).await.unwrap();
    assert_eq!(claimed.len(), 1);

    let queues = fx.engine.list_queues().await.unwrap();
    let names: Vec<_> = queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["etl", "idle"]);
    let etl = &queues[0];
    assert!(!etl.paused);
    assert_eq!((etl.concurrency, etl.concurrency_per_key), (Some(3), None));
    assert_eq!((etl.running, etl.queued, etl.delayed), (1, 1, 1));
    assert!(matches!(etl.oldest_due, Some(durable::engine::Moment::Micros(_))));
    let rates: Vec<_> = etl.rates.iter().map(|r| (r.max_starts, r.period, r.used)).collect();
    assert_eq!(rates, [(10, minute, 1), (100, minute * 60, 1)]);
    let idle = &queues[1];
    assert!(idle.paused);
    assert_eq!(
        (idle.running, idle.queued, idle.delayed, idle.oldest_due.clone()),
        (0, 0, 0, None)
    );
    assert!(idle.rates.is_empty());
    drop(claimed);
    fx.drop_schema().await;
}

#[tokio::test]
async fn without_migrate_a_missing_or_old_schema_is_refused_and_left_alone() {
    let schema = fresh_schema();
    let _dropper = SchemaGuard(schema.clone());
    let check = Options {
        schema: schema.clone(),
        migrate: false,
        ..Options::default()
    };
    let err = Engine::connect(&dsn(), &check).await.err().expect("no schema yet");
    assert_eq!(
        err,
        EngineError::SchemaNotCurrent {
            schema: schema.clone(),
            found: None,
            wanted: LATEST_VERSION
        }
    );
    assert!(err.to_string().contains("durable migrate"), "{err}");
    let admin = admin().await;
    let row = admin
        .query_one("SELECT to_regnamespace($1) IS NULL", &[&schema])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "nothing was created");

    let migrating = Options {
        schema: schema.clone(),
        ..Options::default()
    };
    let engine = Engine::connect(&dsn(), &migrating).await.unwrap();
    assert_eq!(engine.migrated_from(), 0, "created");
    engine.close().await;
    let engine = Engine::connect(&dsn(), &check).await.unwrap();
    assert_eq!(engine.migrated_from(), LATEST_VERSION);
    engine.close().await;

    admin
        .execute(
            &format!("DELETE FROM {schema}.migration WHERE version = $1"),
            &[&LATEST_VERSION],
        )
        .await
        .unwrap();
    let err = Engine::connect(&dsn(), &check).await.err().expect("one version behind");
    assert!(
        matches!(err, EngineError::SchemaNotCurrent { found: Some(v), .. } if v == LATEST_VERSION - 1),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_suspended_run_leaves_its_holder_and_is_claimed_again_when_due_with_the_same_attempt() {
    use durable::engine::{ClaimLimits, EnqueueMany, Suspended, Suspension};
    let fx = Fixture::new().await;
    let input = json("null");
    let run = EnqueueMany {
        runs: &[("sleeper", &input)],
        workflow: "app.job",
        queue: "q",
        delay: std::time::Duration::ZERO,
        run_at: None,
        priority: 0,
        key: None,
        enqueued_by: None,
    };
    fx.engine.enqueue_many(&run).await.unwrap();
    let workflows = ["app.job".to_owned()];
    let claim = ClaimLimits {
        max: 1,
        workflows: &workflows,
        version: None,
        isolated: false,
    };
    let mut claimed = fx.engine.claim(Some("q"), claim).await.unwrap();
    let started = claimed.pop().expect("claimed").started;
    let root = started.workflow;
    let hold = started.hold.expect("held");
    let waiting = json(r#"{"kind": "sleep", "step": "nap", "detail": "sleeping"}"#);
    let soon = fx.engine.db_now().await.unwrap() + 300_000;
    let wait = Suspension {
        until_us: Some(soon),
        waiting: &waiting,
        waiting_on: None,
        message: None,
    };
    // A wake that came while it ran refuses the next suspension, once.
    assert!(fx.engine.wake(root.id).await.unwrap());
    assert_eq!(fx.engine.suspend(root, wait).await.unwrap(), Suspended::Woken);
    assert_eq!(fx.engine.suspend(root, wait).await.unwrap(), Suspended::Yes);
    hold.suspended();
    let row = fx
        .admin
        .query_one(
            &format!(
                "SELECT status, owner_id IS NULL, waiting ->> 'kind' FROM {}.task WHERE id = $1",
                fx.schema
            ),
            &[&root.id],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, bool>(1), row.get::<_, String>(2)),
        ("scheduled".to_owned(), true, "sleep".to_owned())
    );
    // A stale suspension under the old epoch is refused.
    assert!(matches!(
        fx.engine.suspend(root, wait).await,
        Err(EngineError::LeaseLost { .. })
    ));
    assert!(
        fx.engine.claim(Some("q"), claim).await.unwrap().is_empty(),
        "not due yet"
    );
    let due_in = fx
        .engine
        .next_due(&workflows, None, std::time::Duration::ZERO)
        .await
        .unwrap()
        .expect("due later");
    assert!(due_in <= std::time::Duration::from_millis(300), "{due_in:?}");
    tokio::time::sleep(due_in).await;
    let again = fx.engine.claim(Some("q"), claim).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].started.attempt, 1, "a suspension is not a new attempt");
    assert!(again[0].started.workflow.epoch > root.epoch);
    drop(again);
    fx.drop_schema().await;
}

#[tokio::test]
async fn a_transaction_commits_the_users_rows_with_the_step_or_neither() {
    let fx = Fixture::new().await;
    let table = format!("{}.shipments", fx.schema);
    fx.admin
        .batch_execute(&format!("CREATE TABLE {table} (order_id int NOT NULL)"))
        .await
        .unwrap();
    let count = || async {
        let row = fx
            .admin
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    let started = fx.engine.start(None, "order", &json("null"), None).await.unwrap();
    let wf = started.workflow;
    let insert = format!("INSERT INTO {table} (order_id) VALUES ($1)");

    // Rolled back: only the marker (written outside the transaction) remains.
    let mut tx = fx.engine.begin_transaction(wf, "record".into(), 1).await.unwrap();
    let statement = tx.prepare(&insert).await.unwrap();
    assert_eq!(tx.execute(&statement, &[Param::Int4(1)]).await.unwrap(), 1);
    tx.rollback().await;
    assert_eq!(count().await, 0);
    assert_eq!(
        fx.children(wf.id).await,
        [("record".to_owned(), "running".to_owned(), 1, None)]
    );

    // Dropped open: its connection is closed, not pooled, and the server rolls back.
    let mut tx = fx.engine.begin_transaction(wf, "record".into(), 2).await.unwrap();
    let statement = tx.prepare(&insert).await.unwrap();
    tx.execute(&statement, &[Param::Int4(2)]).await.unwrap();
    drop(tx);

    // Committed: both land.
    let mut tx = fx.engine.begin_transaction(wf, "record".into(), 3).await.unwrap();
    let statement = tx.prepare(&insert).await.unwrap();
    tx.execute(&statement, &[Param::Int4(3)]).await.unwrap();
    let select = tx
        .prepare(&format!("SELECT order_id, $1::numeric AS n FROM {table}"))
        .await
        .unwrap();
    let rows = tx.query(&select, &[Param::Text("-0.50".into())]).await.unwrap();
    assert_eq!(rows.columns, ["order_id", "n"]);
    assert_eq!(rows.rows, [vec![Cell::Int(3), Cell::Numeric("-0.50".into())]]);
    tx.commit(json("3")).await.unwrap();
    assert_eq!(count().await, 1);
    assert_eq!(
        fx.children(wf.id).await,
        [("record".to_owned(), "completed".to_owned(), 3, Some("3".to_owned()))]
    );

    // Taken over meanwhile: the fence refuses the step, and the user's row goes with it.
    let mut tx = fx.engine.begin_transaction(wf, "late".into(), 1).await.unwrap();
    let statement = tx.prepare(&insert).await.unwrap();
    tx.execute(&statement, &[Param::Int4(4)]).await.unwrap();
    fx.admin
        .execute(
            &format!(
                "UPDATE {}.task SET lease_epoch = lease_epoch + 1 WHERE id = $1",
                fx.schema
            ),
            &[&wf.id],
        )
        .await
        .unwrap();
    let refused = tx.commit(json("4")).await;
    assert!(
        matches!(refused, Err(CommitError::RolledBack(EngineError::LeaseLost { .. }))),
        "{refused:?}"
    );
    assert_eq!(count().await, 1);
    fx.drop_schema().await;
}

#[tokio::test]
async fn concurrent_root_starts_share_one_commit_and_each_gets_its_own_row() {
    let fx = Fixture::new().await;
    let before = fx.engine.stats();
    let names: Vec<String> = (0..50).map(|i| format!("burst-{i:02}")).collect();
    // Polled together on this one-thread runtime: every start is queued
    // before the starter runs, so they all go in its first statement.
    let started = futures_util::future::join_all(names.iter().enumerate().map(|(i, name)| {
        let engine = fx.engine.clone();
        let input = json(&format!("{{\"i\": {i}}}"));
        let deadline = (i % 2 == 0).then(|| std::time::Duration::from_secs(3600));
        async move {
            if i % 3 == 0 {
                engine.start_registered(name, &input, deadline, "mod.fn").await
            } else {
                engine.start(None, name, &input, deadline).await
            }
        }
    }))
    .await;
    let after = fx.engine.stats();
    assert_eq!(
        (after.start_batches - before.start_batches, after.starts - before.starts),
        (1, 50),
        "50 starts in one statement"
    );
    let rows = fx
        .admin
        .query(
            &format!(
                "SELECT name, id, root_id, status, owner_id::text, lease_epoch, input::text,
                        deadline_at IS NOT NULL, workflow
                 FROM {}.task WHERE parent_id IS NULL ORDER BY name",
                fx.schema
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 50);
    for (i, (row, started)) in rows.iter().zip(&started).enumerate() {
        let started = started.as_ref().expect("a new root starts");
        assert!(started.created && started.hold.is_some());
        assert_eq!(row.get::<_, String>(0), names[i]);
        assert_eq!(row.get::<_, i64>(1), started.workflow.id, "each caller got its own row");
        assert_eq!(row.get::<_, i64>(2), started.workflow.id, "a root is its own root");
        assert_eq!(row.get::<_, String>(3), "running");
        assert_eq!(row.get::<_, String>(4), fx.engine.owner_id());
        assert_eq!((row.get::<_, i64>(5), started.workflow.epoch), (1, 1));
        assert_eq!(row.get::<_, String>(6), format!("{{\"i\": {i}}}"));
        assert_eq!(row.get::<_, bool>(7), i % 2 == 0);
        assert_eq!(started.deadline.is_some(), i % 2 == 0);
        assert_eq!(
            row.get::<_, Option<String>>(8).as_deref(),
            (i % 3 == 0).then_some("mod.fn")
        );
    }
    drop(started);
    fx.drop_schema().await;
}

#[tokio::test]
async fn a_batch_of_root_starts_gives_each_caller_its_own_answer() {
    let fx = Fixture::new().await;
    let other = second_engine(&fx).await;
    let done = fx.engine.start(None, "done", &json("1"), None).await.unwrap();
    fx.engine
        .step_finished(done.workflow, "s".into(), 1, Outcome::Completed(json("\"saved\"")))
        .await
        .unwrap();
    fx.engine
        .workflow_finished(done.workflow, Outcome::Completed(json("\"out\"")))
        .await
        .unwrap();
    drop(done);
    let held = other.start(None, "held", &json("null"), None).await.unwrap();
    let interrupted = fx.engine.start(None, "interrupted", &json("null"), None).await.unwrap();
    let interrupted_id = interrupted.workflow.id;
    drop(interrupted);
    drop(fx.engine.start(None, "job", &json("{\"a\": 1}"), None).await.unwrap());
    fx.engine
        .start_registered("owned", &json("null"), None, "mod.first")
        .await
        .unwrap()
        .hold
        .expect("held")
        .release()
        .await;

    let before = fx.engine.stats();
    let (null, one, other_input) = (json("null"), json("1"), json("{\"a\": 2}"));
    let (new, replayed, busy, resumed, mismatch, other_function) = tokio::join!(
        fx.engine.start(None, "new", &null, None),
        fx.engine.start(None, "done", &one, None),
        fx.engine.start(None, "held", &null, None),
        fx.engine.start(None, "interrupted", &null, None),
        fx.engine.start(None, "job", &other_input, None),
        fx.engine.start_registered("owned", &null, None, "mod.second"),
    );
    let after = fx.engine.stats();
    assert_eq!(
        after.start_batches - before.start_batches,
        1,
        "the six starts went in one statement"
    );
    let new = new.unwrap();
    assert!(new.created && new.status == Status::Running);
    let replayed = replayed.unwrap();
    assert_eq!(
        (replayed.status, replayed.output, replayed.hold.is_none()),
        (Status::Completed, Some(json("\"out\"")), true)
    );
    assert_eq!(replayed.history["s"].output, Some(json("\"saved\"")));
    assert_eq!(busy.unwrap_err(), EngineError::WorkflowBusy { name: "held".into() });
    let resumed = resumed.unwrap();
    assert_eq!(
        (resumed.workflow.id, resumed.attempt, resumed.created),
        (interrupted_id, 2, false)
    );
    assert_eq!(mismatch.unwrap_err(), EngineError::InputMismatch { name: "job".into() });
    assert_eq!(
        other_function.unwrap_err(),
        EngineError::OtherWorkflow {
            name: "owned".into(),
            workflow: Some("mod.first".into())
        }
    );
    // The refused starts changed nothing: the holder writes on.
    other
        .step_finished(held.workflow, "s".into(), 1, Outcome::Completed(json("1")))
        .await
        .unwrap();
    drop((new, resumed, held));
    other.close().await;
    fx.drop_schema().await;
}

#[tokio::test]
async fn two_engines_starting_overlapping_roots_at_once_hold_each_exactly_once() {
    let fx = Fixture::new().await;
    let other = second_engine(&fx).await;
    let name = |i: usize| format!("shared-{i:03}");
    // `fx.engine` starts 0..60 in order, `other` 30..90 backwards: each
    // batch is sorted, so the 30 names both start are locked in one order.
    let starts = |engine: &Engine, names: Vec<usize>| {
        futures_util::future::join_all(names.into_iter().map(|i| {
            let engine = engine.clone();
            async move { (i, engine.start(None, &name(i), &json("null"), None).await) }
        }))
    };
    let (mine, theirs) = tokio::join!(
        starts(&fx.engine, (0..60).collect()),
        starts(&other, (30..90).rev().collect())
    );
    let mut holders: Vec<Vec<&str>> = vec![Vec::new(); 90];
    for (engine, results) in [(&fx.engine, &mine), (&other, &theirs)] {
        for (i, result) in results {
            match result {
                Ok(started) => {
                    assert!(started.hold.is_some());
                    holders[*i].push(engine.owner_id());
                }
                Err(err) => assert_eq!(*err, EngineError::WorkflowBusy { name: name(*i) }),
            }
        }
    }
    let rows = fx
        .admin
        .query(
            &format!(
                "SELECT name, owner_id::text, lease_epoch FROM {}.task WHERE parent_id IS NULL ORDER BY name",
                fx.schema
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 90);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.get::<_, String>(0), name(i));
        assert_eq!(holders[i].len(), 1, "{} is held by exactly one engine", name(i));
        assert_eq!(row.get::<_, String>(1), holders[i][0], "and the row names that one");
        assert_eq!(row.get::<_, i64>(2), 1, "nobody took it over");
    }
    drop((mine, theirs));
    other.close().await;
    fx.drop_schema().await;
}

#[tokio::test]
async fn a_root_start_the_server_refuses_fails_alone_in_its_batch() {
    let fx = Fixture::new().await;
    fx.admin
        .batch_execute(&format!(
            "CREATE FUNCTION {s}.poison() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.name = 'poisoned' THEN RAISE EXCEPTION 'this row is poisoned'; END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER poison BEFORE INSERT ON {s}.task FOR EACH ROW EXECUTE FUNCTION {s}.poison();",
            s = fx.schema
        ))
        .await
        .unwrap();
    let before = fx.engine.stats();
    let names = ["a", "b", "poisoned", "c", "d"];
    let results = futures_util::future::join_all(names.iter().map(|name| {
        let engine = fx.engine.clone();
        async move { engine.start(None, name, &json("null"), None).await }
    }))
    .await;
    for (name, result) in names.iter().zip(&results) {
        if *name == "poisoned" {
            let err = result.as_ref().unwrap_err();
            assert_eq!(err.sqlstate(), Some("P0001"), "{err:?}");
            let text = err.to_string();
            assert!(text.contains("starting workflow \"poisoned\""), "{text}");
            assert!(text.contains("this row is poisoned"), "{text}");
        } else {
            assert!(
                result.as_ref().is_ok_and(|started| started.created),
                "{name}: {result:?}"
            );
        }
    }
    let after = fx.engine.stats();
    // The batch of five was refused, then each start was sent alone.
    assert_eq!(
        (after.start_batches - before.start_batches, after.starts - before.starts),
        (4, 4)
    );
    drop(results);
    fx.drop_schema().await;
}

#[tokio::test]
async fn root_starts_queued_when_the_engine_closes_fail_with_closed() {
    let fx = Fixture::new().await;
    let done = fx.engine.start(None, "blocker", &json("null"), None).await.unwrap();
    fx.engine
        .workflow_finished(done.workflow, Outcome::Completed(json("1")))
        .await
        .unwrap();
    drop(done);
    // A pool of two: the starter sends one batch at a time.
    let options = Options {
        schema: fx.schema.clone(),
        max_connections: 2,
        ..Options::default()
    };
    let engine = Engine::connect(&dsn(), &options).await.expect("connect");
    let mut locker = admin().await;
    let lock = locker.transaction().await.unwrap();
    lock.execute(
        &format!("SELECT 1 FROM {}.task WHERE name = 'blocker' FOR UPDATE", fx.schema),
        &[],
    )
    .await
    .unwrap();
    let blocked = tokio::spawn({
        let engine = engine.clone();
        async move { engine.start(None, "blocker", &json("null"), None).await }
    });
    // The batch in flight waits for the row lock.
    let waiting = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%\"{}\".task%'",
        fx.schema
    );
    while fx.admin.query_one(&waiting, &[]).await.unwrap().get::<_, i64>(0) == 0 {
        tokio::task::yield_now().await;
    }
    let null = json("null");
    let (queued, ()) = tokio::join!(
        futures_util::future::join_all(["a", "b", "c"].map(|name| engine.start(None, name, &null, None))),
        async {
            engine.close().await;
            lock.commit().await.unwrap();
        }
    );
    for result in queued {
        assert_eq!(result.unwrap_err(), EngineError::Closed);
    }
    // The batch in flight was answered; the history read after it found
    // the engine closed.
    assert_eq!(blocked.await.unwrap().unwrap_err(), EngineError::Closed);
    fx.drop_schema().await;
}

#[tokio::test]
async fn a_send_made_again_by_its_sender_finds_its_message_and_another_sender_a_duplicate() {
    use durable::engine::{Sender, Sent};
    let fx = Fixture::new().await;
    let target = fx.engine.start(None, "target", &json("null"), None).await.unwrap();
    let step = Sender {
        workflow_id: 7,
        step: "send t to target",
    };
    let send = |key: &'static str, sender: Option<Sender<'static>>| {
        let engine = fx.engine.clone();
        async move {
            engine
                .send(&path(&["target"]), "t", &json("1"), Some(key), sender)
                .await
                .unwrap()
        }
    };
    assert_eq!(send("k", Some(step)).await, Sent::Sent);
    assert_eq!(send("k", Some(step)).await, Sent::Sent, "its own message");
    let other_step = Sender {
        step: "send t to target#2",
        ..step
    };
    assert_eq!(send("k", Some(other_step)).await, Sent::Duplicate);
    assert_eq!(send("k", None).await, Sent::Duplicate);
    assert_eq!(send("outside", None).await, Sent::Sent);
    assert_eq!(send("outside", None).await, Sent::Duplicate, "another call");
    let rows = fx
        .admin
        .query(
            &format!(
                "SELECT sent_from, sent_by FROM {}.task_message WHERE task_id = $1 ORDER BY id",
                fx.schema
            ),
            &[&target.workflow.id],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, Option<i64>>(0), Some(7));
    assert_eq!(rows[0].get::<_, Option<String>>(1).as_deref(), Some("send t to target"));
    assert_eq!(rows[1].get::<_, Option<i64>>(0), None);
    let token: String = rows[1].get(1);
    assert!(
        token.starts_with("call ") && token.ends_with(fx.engine.owner_id()),
        "{token}"
    );
    drop(target);
    fx.drop_schema().await;
}

/// Queues one run of `app.job` named `name` in queue `q`.
async fn enqueue_one(fx: &Fixture, name: &str) {
    use durable::engine::EnqueueMany;
    let input = json("null");
    let run = EnqueueMany {
        runs: &[(name, &input)],
        workflow: "app.job",
        queue: "q",
        delay: std::time::Duration::ZERO,
        run_at: None,
        priority: 0,
        key: None,
        enqueued_by: None,
    };
    fx.engine.enqueue_many(&run).await.unwrap();
}

/// Queues one run of `app.job` in queue `q` for each of `names`, then
/// claims them all (held by this engine while the result lives).
async fn claim_runs(fx: &Fixture, names: &[&str]) -> Vec<durable::engine::Claimed> {
    use durable::engine::ClaimLimits;
    for name in names {
        enqueue_one(fx, name).await;
    }
    let workflows = ["app.job".to_owned()];
    let claim = ClaimLimits {
        max: names.len(),
        workflows: &workflows,
        version: None,
        isolated: false,
    };
    fx.engine.claim(Some("q"), claim).await.unwrap()
}

/// The workflow of the claimed run `name`.
fn root_of(claimed: &[durable::engine::Claimed], name: &str) -> durable::engine::WorkflowId {
    claimed
        .iter()
        .find(|run| run.name == name)
        .map(|run| run.started.workflow)
        .unwrap()
}

#[tokio::test]
async fn a_run_held_in_the_database_but_not_here_is_requeued_without_a_recovery() {
    let fx = Fixture::new().await;
    let held = claim_runs(&fx, &["held"]).await;
    enqueue_one(&fx, "lost").await;
    let workflows = ["app.job".to_owned()];
    // As a claim whose answer was lost: running under this owner, held by no handle.
    fx.admin
        .execute(
            &format!(
                "UPDATE {}.task SET status = 'running', owner_id = $1::text::uuid, lease_epoch = 1 WHERE name = 'lost'",
                fx.schema
            ),
            &[&fx.engine.owner_id()],
        )
        .await
        .unwrap();
    let found = fx.engine.recover(&workflows, None, 0).await.unwrap();
    assert_eq!((found.orphans, found.requeued, found.failed), (1, 0, 0));
    let rows = fx
        .admin
        .query(
            &format!("SELECT name, status, recoveries FROM {}.task ORDER BY name", fx.schema),
            &[],
        )
        .await
        .unwrap();
    let states: Vec<(String, String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(
        states,
        [
            ("held".to_owned(), "running".to_owned(), 0),
            ("lost".to_owned(), "queued".to_owned(), 0)
        ],
        "the run held here is left alone"
    );
    drop(held);
    fx.drop_schema().await;
}

#[tokio::test]
async fn a_wait_that_would_close_a_cycle_is_refused_and_a_chain_is_not() {
    let fx = Fixture::new().await;
    let claimed = claim_runs(&fx, &["a", "b", "c"]).await;
    let root = |name: &str| root_of(&claimed, name);
    fx.engine.wait_on(root("a"), Some("b")).await.unwrap();
    fx.engine.wait_on(root("b"), Some("c")).await.unwrap();
    match fx.engine.wait_on(root("c"), Some("a")).await {
        Err(EngineError::WaitCycle { waiter, cycle }) => {
            assert_eq!(waiter, "c");
            assert_eq!(cycle, ["a", "b", "c"]);
        }
        other => panic!("expected a cycle, got {other:?}"),
    }
    assert!(matches!(
        fx.engine.wait_on(root("c"), Some("c")).await,
        Err(EngineError::WaitCycle { cycle, .. }) if cycle == ["c"]
    ));
    // Once b no longer waits, c may wait for a.
    fx.engine.wait_on(root("b"), None).await.unwrap();
    fx.engine.wait_on(root("c"), Some("a")).await.unwrap();
    drop(claimed);
    fx.drop_schema().await;
}

#[tokio::test]
async fn an_unreceived_message_refuses_the_suspension_of_its_receiver() {
    use durable::engine::{Suspended, Suspension};
    let fx = Fixture::new().await;
    let mut claimed = claim_runs(&fx, &["receiver"]).await;
    let started = claimed.pop().expect("claimed").started;
    let root = started.workflow;
    let _hold = started.hold.expect("held");
    // A message no wake announced (wake_pending stays false): only the
    // suspension's own look at the messages can see it.
    fx.admin
        .execute(
            &format!(
                "INSERT INTO {}.task_message (task_id, topic, value) VALUES ($1, 't', 'null'::jsonb)",
                fx.schema
            ),
            &[&root.id],
        )
        .await
        .unwrap();
    let waiting = json(r#"{"kind": "message", "step": "t", "detail": "waiting for a message on 't'"}"#);
    let wait = Suspension {
        until_us: None,
        waiting: &waiting,
        waiting_on: None,
        message: Some((root.id, "t")),
    };
    assert_eq!(fx.engine.suspend(root, wait).await.unwrap(), Suspended::Woken);
    fx.drop_schema().await;
}

#[tokio::test]
async fn two_waits_recorded_at_once_still_find_their_cycle() {
    let fx = Fixture::new().await;
    let claimed = claim_runs(&fx, &["a", "b"]).await;
    let root = |name: &str| root_of(&claimed, name);
    // Both rows locked: each wait reads its chain, then blocks on its own
    // row (or, one at a time, on the lock that records waits), until both
    // are in flight at once.
    fx.admin.batch_execute("BEGIN").await.unwrap();
    fx.admin
        .execute(
            &format!("SELECT 1 FROM {}.task WHERE name IN ('a', 'b') FOR UPDATE", fx.schema),
            &[],
        )
        .await
        .unwrap();
    let release = async {
        loop {
            // pg_stat_activity is read once per transaction unless cleared,
            // and this connection's transaction stays open: clear it each look.
            fx.admin.batch_execute("SELECT pg_stat_clear_snapshot()").await.unwrap();
            let row = fx
                .admin
                .query_one(
                    "SELECT (SELECT count(*) FROM pg_locks
                             WHERE locktype = 'advisory' AND NOT granted
                               AND classid = 2002872692 AND objid = hashtext($1)::oid)
                          + (SELECT count(*) FROM pg_stat_activity
                             WHERE datname = current_database() AND wait_event_type = 'Lock'
                               AND query LIKE '%' || $1 || '%')",
                    &[&fx.schema],
                )
                .await
                .unwrap();
            if row.get::<_, i64>(0) >= 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        fx.admin.batch_execute("COMMIT").await.unwrap();
    };
    let (a, b, ()) = tokio::join!(
        fx.engine.wait_on(root("a"), Some("b")),
        fx.engine.wait_on(root("b"), Some("a")),
        release
    );
    let cycles = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(EngineError::WaitCycle { .. })))
        .count();
    assert_eq!(cycles, 1, "exactly one of two crossing waits is refused: {a:?}, {b:?}");
    drop(claimed);
    fx.drop_schema().await;
}

// The workflow handle (`engine::WorkflowHandle`) with the hold of its tree
// and real writes; its rules without a database are unit tests of
// `engine::handle`.

/// The handle of the root `name`, started (or found finished) with input null.
async fn root_handle(fx: &Fixture, name: &str) -> WorkflowHandle {
    let started = fx.engine.start(None, name, &json("null"), None).await.unwrap();
    WorkflowHandle::new(name.to_owned(), json("null"), started, None)
}

/// The handle of the child `name` of `parent`, with input null.
async fn child_handle(fx: &Fixture, parent: &WorkflowHandle, name: &str) -> WorkflowHandle {
    let child = parent.claim_child(name.to_owned()).unwrap();
    parent.run().start_child(&fx.engine, child, json("null")).await.unwrap()
}

#[tokio::test]
async fn a_handle_finishes_its_workflow_once_and_a_later_write_says_this_run_finished_it() {
    let fx = Fixture::new().await;
    let wf = root_handle(&fx, "r").await;
    assert_eq!(wf.begin_step("s", false), Ok(StepVerdict::Run { attempt: 1 }));
    let result = Outcome::Completed(json("1"));
    wf.check_finish(&result).unwrap();
    wf.run().finish(&fx.engine, result.clone()).await.unwrap();
    assert_eq!((wf.status(), wf.output()), (Status::Completed, Some(json("1"))));
    let finished_here = |what: &str| EngineError::FinishedHere {
        workflow: "r".to_owned(),
        status: "completed",
        what: what.to_owned(),
    };
    assert_eq!(wf.check_finish(&result), Err(finished_here("its result")));
    let late = wf
        .run()
        .save_step(&fx.engine, "s".to_owned(), 1, Outcome::Completed(json("2")))
        .await;
    assert_eq!(late, Err(finished_here("the outcome of step \"s\"")));
    fx.drop_schema().await;
}

#[tokio::test]
async fn a_child_shares_its_roots_hold_and_stops_when_the_root_finishes_while_the_root_does_not() {
    let fx = Fixture::new().await;
    let wf = root_handle(&fx, "r").await;
    let child = child_handle(&fx, &wf, "c").await;
    assert_eq!(child.tree_root(), Some(wf.id()), "the child holds the root's tree");
    assert_eq!(child.begin_step("s", false), Ok(StepVerdict::Run { attempt: 1 }));
    child
        .run()
        .save_step(&fx.engine, "s".to_owned(), 1, Outcome::Completed(json("1")))
        .await
        .unwrap();
    wf.run()
        .finish(&fx.engine, Outcome::Completed(json("1")))
        .await
        .unwrap();
    assert_eq!(
        child.check(),
        Err(EngineError::RootFinished {
            name: "r".to_owned(),
            status: "completed",
        })
    );
    assert_eq!(wf.check(), Ok(()), "a root's own end is told by its status");
    fx.drop_schema().await;
}

#[tokio::test]
async fn a_cancelled_child_stops_its_own_handle_and_not_its_parents() {
    let fx = Fixture::new().await;
    let wf = root_handle(&fx, "r").await;
    let child = child_handle(&fx, &wf, "c").await;
    assert!(
        fx.engine
            .cancel(&path(&["r", "c"]), CancelScope::default())
            .await
            .unwrap()
    );
    let cancelled = EngineError::Cancelled {
        workflow_id: child.id().id,
    };
    let write = child
        .run()
        .save_step(&fx.engine, "s".to_owned(), 1, Outcome::Completed(json("1")))
        .await;
    assert_eq!(write, Err(cancelled.clone()));
    assert_eq!(
        (child.status(), child.check()),
        (Status::Cancelled, Err(cancelled.clone()))
    );
    assert_eq!(child.begin_step("t", false), Err(cancelled));
    assert_eq!((wf.status(), wf.check()), (Status::Running, Ok(())));
    wf.run()
        .finish(&fx.engine, Outcome::Completed(json("1")))
        .await
        .unwrap();
    fx.drop_schema().await;
}

#[tokio::test]
async fn a_released_root_stops_its_tree_and_a_late_write_says_it_was_released() {
    let fx = Fixture::new().await;
    let wf = root_handle(&fx, "r").await;
    let child = child_handle(&fx, &wf, "c").await;
    wf.release().await;
    let released = |name: &str| EngineError::Released { name: name.to_owned() };
    assert_eq!(wf.check(), Err(released("r")));
    assert_eq!(child.check(), Err(released("r")));
    // The database refuses the write (the lease is given up); the handle
    // says why: this process released it.
    let late = child
        .run()
        .save_step(&fx.engine, "s".to_owned(), 1, Outcome::Completed(json("1")))
        .await;
    assert_eq!(late, Err(released("c")));
    fx.drop_schema().await;
}

#[tokio::test]
async fn a_graceful_stop_refuses_new_steps_and_lets_the_run_finish() {
    let fx = Fixture::new().await;
    let wf = root_handle(&fx, "r").await;
    let child = child_handle(&fx, &wf, "c").await;
    child.drain();
    assert!(wf.draining(), "the whole tree drains");
    let draining = EngineError::Draining { name: "r".to_owned() };
    assert_eq!(wf.begin_step("s", false), Err(draining.clone()));
    assert_eq!(child.begin_step("s", false), Err(draining));
    child.check_finish(&Outcome::Completed(json("1"))).unwrap();
    child
        .run()
        .finish(&fx.engine, Outcome::Completed(json("1")))
        .await
        .unwrap();
    wf.check_finish(&Outcome::Completed(json("2"))).unwrap();
    wf.run()
        .finish(&fx.engine, Outcome::Completed(json("2")))
        .await
        .unwrap();
    assert_eq!((wf.status(), child.status()), (Status::Completed, Status::Completed));
    fx.drop_schema().await;
}

#[tokio::test]
async fn a_finished_roots_handle_replays_its_children_and_they_run_nothing_new() {
    let fx = Fixture::new().await;
    let wf = root_handle(&fx, "r").await;
    let child = child_handle(&fx, &wf, "c").await;
    child.begin_step("s", false).unwrap();
    let saved = Outcome::Completed(json("\"saved\""));
    child
        .run()
        .save_step(&fx.engine, "s".to_owned(), 1, saved)
        .await
        .unwrap();
    // The root completes while its child still runs (its result not needed).
    wf.run()
        .finish(&fx.engine, Outcome::Completed(json("2")))
        .await
        .unwrap();

    let again = root_handle(&fx, "r").await;
    assert!(again.replays_only());
    assert_eq!(again.tree_root(), None, "nothing is held to replay");
    let child = child_handle(&fx, &again, "c").await;
    assert_eq!(child.status(), Status::Running);
    assert_eq!(
        child.begin_step("s", false),
        Ok(StepVerdict::Replay {
            output: json("\"saved\""),
            attempt: 1,
        })
    );
    let refused = child.begin_step("new", false).unwrap_err();
    assert!(
        matches!(&refused, EngineError::WithinFinished { parent, status: "completed", .. } if parent == "r"),
        "{refused:?}"
    );
    fx.drop_schema().await;
}

/// A single enqueue of `app.job` named `name` in queue `q`, no delay: the
/// options each test then changes.
fn single<'a>(name: &'a str, input: &'a JsonText) -> durable::engine::Enqueue<'a> {
    durable::engine::Enqueue {
        name,
        input,
        workflow: "app.job",
        queue: "q",
        delay: std::time::Duration::ZERO,
        run_at: None,
        priority: 0,
        key: None,
        enqueued_by: None,
    }
}

#[tokio::test]
async fn single_enqueues_made_at_once_share_a_statement_each_with_its_own_options() {
    use durable::engine::Enqueue;
    let fx = Fixture::new().await;
    let names: Vec<String> = (0..40).map(|i| format!("run-{i:02}")).collect();
    let inputs: Vec<JsonText> = (0..40).map(|i| json(&format!("{{\"i\": {i}}}"))).collect();
    // Every option differs from one run to the next.
    let request = |i: usize| Enqueue {
        workflow: if i % 2 == 0 { "app.even" } else { "app.odd" },
        queue: ["qa", "qb", "qc"][i % 3],
        delay: std::time::Duration::from_secs(if i % 5 == 1 { 3600 } else { 0 }),
        run_at: (i % 5 == 2).then_some("2999-01-01T00:00:00Z"),
        priority: i32::try_from(i).unwrap(),
        key: (i % 4 == 0).then_some("k"),
        enqueued_by: (i % 7 == 0).then_some(7),
        ..single(&names[i], &inputs[i])
    };
    let before = fx.engine.stats();
    // Each call queues its request at its first poll, before the
    // enqueuer's task runs: all forty go in its first statement.
    let enqueued = futures_util::future::join_all((0..40).map(|i| {
        let (engine, request) = (fx.engine.clone(), request(i));
        async move { engine.enqueue(&request).await }
    }))
    .await;
    let after = fx.engine.stats();
    assert_eq!(
        (
            after.enqueue_batches - before.enqueue_batches,
            after.enqueues - before.enqueues
        ),
        (1, 40),
        "forty enqueues in one statement"
    );
    let rows = fx
        .admin
        .query(
            &format!(
                "SELECT id, name, input::text, workflow, queue, status, priority, concurrency_key, enqueued_by,
                        run_at > now() + interval '59 minutes', xmin::text
                 FROM {}.task WHERE parent_id IS NULL ORDER BY name",
                fx.schema
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 40);
    let commits: std::collections::HashSet<String> = rows.iter().map(|r| r.get(10)).collect();
    assert_eq!(commits.len(), 1, "one transaction wrote them all");
    let mut queues_made = 0;
    for (i, (row, enqueued)) in rows.iter().zip(&enqueued).enumerate() {
        let asked = request(i);
        let enqueued = enqueued.as_ref().expect("enqueued");
        assert_eq!(row.get::<_, i64>(0), enqueued.id, "each caller got its own run");
        assert!(enqueued.created);
        queues_made += usize::from(enqueued.queue_created);
        assert_eq!(row.get::<_, String>(1), names[i]);
        assert_eq!(row.get::<_, String>(2), inputs[i].0);
        assert_eq!(row.get::<_, String>(3), asked.workflow);
        assert_eq!(row.get::<_, String>(4), asked.queue);
        let delayed = i % 5 == 1 || i % 5 == 2;
        let status = if delayed { Status::Scheduled } else { Status::Queued };
        assert_eq!((row.get::<_, &str>(5), enqueued.status), (status.as_str(), status));
        assert_eq!(row.get::<_, i32>(6), asked.priority);
        assert_eq!(row.get::<_, Option<&str>>(7), asked.key);
        assert_eq!(row.get::<_, Option<i64>>(8), asked.enqueued_by);
        assert_eq!(row.get::<_, bool>(9), delayed);
    }
    assert_eq!(
        queues_made, 3,
        "each new queue is reported made once, as one enqueue after another would"
    );
    fx.drop_schema().await;
}

#[tokio::test]
async fn an_enqueue_refused_in_a_batch_fails_alone() {
    let fx = Fixture::new().await;
    let (one, two) = (json("1"), json("2"));
    fx.engine.enqueue(&single("same", &one)).await.unwrap();
    let owned = durable::engine::Enqueue {
        workflow: "app.other",
        ..single("owned", &one)
    };
    fx.engine.enqueue(&owned).await.unwrap();
    let before = fx.engine.stats();
    let requests = [
        single("a", &one),
        single("same", &two),
        single("owned", &one),
        // The server refuses this one for good (no such time): the batch is
        // sent again one enqueue at a time.
        durable::engine::Enqueue {
            run_at: Some("not a time"),
            ..single("bad", &one)
        },
        single("same", &one),
        single("b", &one),
    ];
    let results = futures_util::future::join_all(requests.iter().map(|request| {
        let engine = fx.engine.clone();
        async move { engine.enqueue(request).await }
    }))
    .await;
    let [a, mismatch, other_function, bad, again, b] = results.try_into().unwrap();
    assert!(a.unwrap().created);
    assert!(b.unwrap().created);
    assert_eq!(
        mismatch.unwrap_err(),
        EngineError::InputMismatch { name: "same".into() }
    );
    assert_eq!(
        other_function.unwrap_err(),
        EngineError::OtherWorkflow {
            name: "owned".into(),
            workflow: Some("app.other".into())
        }
    );
    let bad = bad.unwrap_err();
    assert_eq!(bad.sqlstate(), Some("22007"), "{bad:?}");
    assert!(bad.to_string().contains("enqueueing workflow \"bad\""), "{bad}");
    let again = again.unwrap();
    assert!(!again.created, "the second enqueue of `same` found the first");
    let after = fx.engine.stats();
    // The batch of five names was refused; then each went alone, and the
    // repeated name `same` after them.
    assert_eq!(
        (
            after.enqueue_batches - before.enqueue_batches,
            after.enqueues - before.enqueues
        ),
        (5, 5)
    );
    let names: Vec<String> = fx
        .admin
        .query(&format!("SELECT name FROM {}.task ORDER BY name", fx.schema), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["a", "b", "owned", "same"]);
    fx.drop_schema().await;
}
