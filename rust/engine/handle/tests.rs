//! The handle's rules, without a database: handles built from a `Started`
//! as a start would return it, without a hold (as a handle that only
//! replays has none). The rules that need a hold or a write are in
//! `rust/tests/engine.rs`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{StepVerdict, WorkflowHandle};
use crate::engine::{EngineError, HistoryEntry, JsonText, Kind, Outcome, Started, Status, WorkflowId};

fn json(text: &str) -> JsonText {
    JsonText(text.to_owned())
}

fn step(status: Status, attempt: i32) -> HistoryEntry {
    HistoryEntry {
        kind: Kind::Step,
        status,
        attempt,
        output: (status == Status::Completed).then(|| json("\"saved\"")),
        error_type: None,
    }
}

fn child(status: Status) -> HistoryEntry {
    HistoryEntry {
        kind: Kind::Workflow,
        output: None,
        ..step(status, 1)
    }
}

/// A root `wf` of `status` whose previous runs recorded `history`.
fn started(status: Status, history: Vec<(&str, HistoryEntry)>) -> Started {
    Started {
        workflow: WorkflowId {
            id: 7,
            root_id: 7,
            epoch: 1,
        },
        status,
        attempt: 2,
        created: false,
        output: None,
        error: None,
        deadline: None,
        history: history
            .into_iter()
            .map(|(name, entry)| (name.to_owned(), entry))
            .collect::<HashMap<_, _>>(),
        hold: None,
    }
}

fn handle(started: Started) -> WorkflowHandle {
    WorkflowHandle::new("wf".to_owned(), json("null"), started, None)
}

/// The child `kid` as `started`, read to replay under the finished `parent` of `status`.
fn under_finished(status: Status, started: Started) -> WorkflowHandle {
    WorkflowHandle::new(
        "kid".to_owned(),
        json("null"),
        started,
        Some(("parent".to_owned(), status)),
    )
}

fn running(history: Vec<(&str, HistoryEntry)>) -> WorkflowHandle {
    handle(started(Status::Running, history))
}

fn duplicate(name: &str) -> EngineError {
    EngineError::DuplicateName {
        workflow: "wf".to_owned(),
        name: name.to_owned(),
    }
}

#[test]
fn a_name_is_used_once_per_run_by_steps_and_children_alike() {
    let wf = running(vec![]);
    assert_eq!(wf.begin_step("a", false), Ok(StepVerdict::Run { attempt: 1 }));
    assert_eq!(wf.begin_step("a", false), Err(duplicate("a")));
    assert_eq!(wf.claim_child("a".to_owned()).unwrap_err(), duplicate("a"));
    wf.claim_child("b".to_owned()).unwrap();
    assert_eq!(wf.claim_child("b".to_owned()).unwrap_err(), duplicate("b"));
    assert_eq!(wf.begin_step("b", false), Err(duplicate("b")));
}

#[test]
fn a_name_the_history_holds_for_the_other_kind_is_a_duplicate() {
    let wf = running(vec![("kid", child(Status::Running)), ("s", step(Status::Completed, 1))]);
    assert_eq!(wf.begin_step("kid", false), Err(duplicate("kid")));
    assert_eq!(wf.claim_child("s".to_owned()).unwrap_err(), duplicate("s"));
}

#[test]
fn an_invalid_name_is_refused_before_it_is_looked_up() {
    let wf = running(vec![]);
    assert!(matches!(
        wf.begin_step("", false),
        Err(EngineError::InvalidName { what: "step", .. })
    ));
    assert!(matches!(
        wf.claim_child("a\0b".to_owned()),
        Err(EngineError::InvalidName {
            what: "child workflow",
            ..
        })
    ));
}

#[test]
fn a_completed_step_replays_its_saved_result_and_attempt() {
    let mut null_result = step(Status::Completed, 1);
    null_result.output = None;
    let wf = running(vec![("a", step(Status::Completed, 3)), ("n", null_result)]);
    let replay = |output: &str, attempt| StepVerdict::Replay {
        output: json(output),
        attempt,
    };
    assert_eq!(wf.begin_step("a", false), Ok(replay("\"saved\"", 3)));
    assert_eq!(wf.begin_step("n", true), Ok(replay("null", 1)));
}

#[test]
fn a_failed_or_abandoned_step_runs_again_as_its_next_attempt() {
    let wf = running(vec![
        ("failed", step(Status::Failed, 3)),
        ("left", step(Status::Running, 1)),
    ]);
    assert_eq!(wf.begin_step("failed", false), Ok(StepVerdict::Run { attempt: 4 }));
    assert_eq!(wf.begin_step("left", false), Ok(StepVerdict::Run { attempt: 2 }));
    assert_eq!(wf.begin_step("new", false), Ok(StepVerdict::Run { attempt: 1 }));
}

#[test]
fn an_at_most_once_step_found_running_is_interrupted_and_once_recorded_so_refused() {
    let mut recorded = step(Status::Failed, 2);
    recorded.error_type = Some("StepInterrupted".to_owned());
    let mut raised = step(Status::Failed, 2);
    raised.error_type = Some("ValueError".to_owned());
    let wf = running(vec![
        ("left", step(Status::Running, 2)),
        ("recorded", recorded),
        ("raised", raised),
    ]);
    let interrupted = |name: &str| EngineError::StepInterrupted {
        workflow: "wf".to_owned(),
        name: name.to_owned(),
    };
    assert_eq!(
        wf.begin_step("left", true),
        Ok(StepVerdict::Interrupted {
            message: interrupted("left").to_string(),
            attempt: 2,
        })
    );
    assert_eq!(wf.begin_step("recorded", true), Err(interrupted("recorded")));
    assert_eq!(wf.begin_step("raised", true), Ok(StepVerdict::Run { attempt: 3 }));
}

#[test]
fn a_finished_workflow_replays_what_it_recorded_and_refuses_anything_else() {
    let wf = handle(started(
        Status::Completed,
        vec![
            ("done", step(Status::Completed, 1)),
            ("left", step(Status::Running, 1)),
            ("kid", child(Status::Completed)),
        ],
    ));
    assert!(wf.replays_only());
    assert!(matches!(wf.begin_step("done", false), Ok(StepVerdict::Replay { .. })));
    let finished = |what, name: &str| EngineError::WorkflowFinished {
        workflow: "wf".to_owned(),
        status: "completed",
        what,
        name: name.to_owned(),
    };
    assert_eq!(wf.begin_step("left", false), Err(finished("step", "left")));
    assert_eq!(wf.begin_step("new", false), Err(finished("step", "new")));
    assert_eq!(
        wf.claim_child("other".to_owned()).unwrap_err(),
        finished("child workflow", "other")
    );
    // A child it started is read as it is, under this finished workflow.
    let kid = wf.claim_child("kid".to_owned()).unwrap();
    assert_eq!(kid.within_finished, Some(("wf".to_owned(), Status::Completed)));
    assert!(kid.tree.is_none());
}

#[test]
fn a_child_read_under_a_finished_parent_replays_only() {
    let wf = under_finished(
        Status::Failed,
        started(Status::Running, vec![("done", step(Status::Completed, 1))]),
    );
    let within = |what: &str| EngineError::WithinFinished {
        parent: "parent".to_owned(),
        status: "failed",
        child: "kid".to_owned(),
        what: what.to_owned(),
    };
    assert!(wf.replays_only());
    assert!(matches!(wf.begin_step("done", false), Ok(StepVerdict::Replay { .. })));
    assert_eq!(
        wf.begin_step("new", false),
        Err(within("its step \"new\", which it never completed,"))
    );
    assert_eq!(
        wf.check_finish(&Outcome::Completed(json("1"))),
        Err(within("its result"))
    );
    assert_eq!(
        wf.check_finish(&Outcome::Failed(json("{}"))),
        Err(within("its failure"))
    );
    // Its own children replay under the same finished parent.
    let wf = under_finished(
        Status::Failed,
        started(Status::Running, vec![("g", child(Status::Running))]),
    );
    let g = wf.claim_child("g".to_owned()).unwrap();
    assert_eq!(g.within_finished, Some(("parent".to_owned(), Status::Failed)));
    // Releasing it changes nothing: it holds nothing.
    wf.release_soon();
    assert_eq!(wf.check(), Ok(()));
}

#[test]
fn past_its_deadline_a_workflow_replays_but_starts_nothing_new() {
    let mut past = started(
        Status::Running,
        vec![("done", step(Status::Completed, 1)), ("kid", child(Status::Running))],
    );
    past.deadline = Instant::now().checked_sub(Duration::from_secs(5));
    let wf = handle(past);
    assert!(wf.deadline_in().is_some_and(|left| left <= -5.0));
    assert!(matches!(wf.begin_step("done", false), Ok(StepVerdict::Replay { .. })));
    wf.claim_child("kid".to_owned()).unwrap();
    let exceeded = EngineError::DeadlineExceeded {
        workflow: "wf".to_owned(),
    };
    assert_eq!(wf.begin_step("new", false), Err(exceeded.clone()));
    assert_eq!(wf.claim_child("new child".to_owned()).unwrap_err(), exceeded);
}

#[test]
fn a_workflow_is_finished_once() {
    let wf = running(vec![]);
    let result = Outcome::Completed(json("1"));
    assert_eq!(wf.check_finish(&result), Ok(()));
    wf.run.finished(result.clone());
    assert_eq!(wf.status(), Status::Completed);
    assert_eq!(wf.output(), Some(json("1")));
    let here = |what: &str| EngineError::FinishedHere {
        workflow: "wf".to_owned(),
        status: "completed",
        what: what.to_owned(),
    };
    assert_eq!(wf.check_finish(&result), Err(here("its result")));
    assert_eq!(wf.check_finish(&Outcome::Failed(json("{}"))), Err(here("its failure")));
    // A write the database refuses as not running says this run finished it.
    let refused = wf.run.watch(
        || "step \"late\"".to_owned(),
        Err::<(), _>(EngineError::NotRunning {
            workflow_id: 7,
            what: "a step".to_owned(),
        }),
    );
    assert_eq!(refused, Err(here("step \"late\"")));
}

#[test]
fn a_workflow_found_finished_by_an_earlier_run_refuses_a_finish_as_not_running() {
    let wf = handle(started(Status::Failed, vec![]));
    let not_running = EngineError::NotRunning {
        workflow_id: 7,
        what: "result".to_owned(),
    };
    assert_eq!(
        wf.check_finish(&Outcome::Completed(json("1"))),
        Err(not_running.clone())
    );
    let refused = wf.run.watch(String::new, Err::<(), _>(not_running.clone()));
    assert_eq!(refused, Err(not_running), "passed on as it is");
}

#[test]
fn a_lost_lease_or_its_own_cancel_stops_the_handle_and_anothers_cancel_does_not() {
    let wf = running(vec![]);
    let other = EngineError::Cancelled { workflow_id: 8 };
    assert_eq!(wf.run.watch(String::new, Err::<(), _>(other.clone())), Err(other));
    assert_eq!(wf.check(), Ok(()), "a child's cancel does not stop its parent");
    let own = EngineError::Cancelled { workflow_id: 7 };
    assert_eq!(wf.run.watch(String::new, Err::<(), _>(own.clone())), Err(own.clone()));
    assert_eq!(wf.check(), Err(own.clone()));
    assert_eq!(wf.status(), Status::Cancelled);
    assert_eq!(wf.begin_step("a", false), Err(own.clone()));
    assert_eq!(wf.check_finish(&Outcome::Completed(json("1"))), Err(own.clone()));

    let wf = running(vec![]);
    let lost = EngineError::LeaseLost { workflow_id: 7 };
    assert_eq!(wf.run.watch(String::new, Err::<(), _>(lost.clone())), Err(lost.clone()));
    assert_eq!(wf.begin_step("a", false), Err(lost.clone()));
    // The first error that stopped it is the one it keeps telling.
    wf.run.doom(&own);
    assert_eq!(wf.check(), Err(lost));
    assert_eq!(wf.status(), Status::Running);
}

#[test]
fn a_released_handle_refuses_more_work_and_a_replaying_one_is_left_alone() {
    let wf = running(vec![]);
    wf.release_soon();
    let released = EngineError::Released { name: "wf".to_owned() };
    assert_eq!(wf.begin_step("a", false), Err(released.clone()));
    assert_eq!(wf.check_finish(&Outcome::Completed(json("1"))), Err(released));

    let finished = handle(started(Status::Completed, vec![("a", step(Status::Completed, 1))]));
    finished.release_soon();
    assert!(matches!(
        finished.begin_step("a", false),
        Ok(StepVerdict::Replay { .. })
    ));
}

#[test]
fn a_graceful_stop_refuses_new_work_but_lets_the_run_end() {
    let wf = running(vec![]);
    let draining = EngineError::Draining { name: "wf".to_owned() };
    wf.run.doom(&draining);
    assert_eq!(wf.begin_step("a", false), Err(draining));
    assert_eq!(wf.check_ending(), Ok(()));
    assert_eq!(wf.check_finish(&Outcome::Completed(json("1"))), Ok(()));
}

#[test]
fn a_handle_without_a_hold_cannot_suspend() {
    let wf = running(vec![]);
    assert!(matches!(wf.suspension_hold(), Err(EngineError::Unexpected(_))));
    assert_eq!(wf.tree_root(), None);
    assert!(!wf.draining());
}
