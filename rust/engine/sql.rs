//! The statement registry: every statement the engine prepares against its
//! schema, by name, and the one way their templates are filled.
//!
//! A statement is a `Sql` const in the module of its concern: a
//! template with `{placeholder}`s and the fragments (`parts`) they name.
//! `{schema}` is the schema, validated by `config::validate_schema` (a
//! plain lowercase identifier) and spliced in quoted; every other
//! placeholder is a fragment of SQL text, which may name further
//! fragments. Every value is a parameter. `fill` is the only thing that
//! fills a template; `Statements` holds every statement filled for one
//! schema, and `registry!` below is the list of them, by name: the
//! statements test (`rust/tests/statements.rs`) checks that each one fills
//! without a placeholder left and prepares against a migrated schema, and
//! writes them all to `rust/engine/statements.sql`, where a reader finds
//! the text that runs by the name used here.

use super::connect::config::quote;
use super::{admin, checkpoint, connect, lease, queue, read, wait};

/// A statement's template and the fragments it names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sql {
    template: &'static str,
    parts: &'static [(&'static str, &'static str)],
    /// For `statements.sql`: how the statement written there stands for
    /// those that are sent, when it is one form of a statement built per call.
    note: &'static str,
}

impl Sql {
    pub(crate) const fn new(template: &'static str) -> Sql {
        Sql {
            template,
            parts: &[],
            note: "",
        }
    }

    /// The fragments the template (or one of them) names: `{name}` becomes
    /// the text given for `name`.
    pub(crate) const fn with(self, parts: &'static [(&'static str, &'static str)]) -> Sql {
        Sql { parts, ..self }
    }

    pub(crate) const fn note(self, note: &'static str) -> Sql {
        Sql { note, ..self }
    }

    /// The text to send for `schema`.
    pub(crate) fn fill(&self, schema: &str) -> String {
        fill(self.template, self.parts, schema)
    }

    /// The text to send for `schema`, with fragments known only per call
    /// (`more`) besides the statement's own.
    pub(crate) fn fill_with(&self, schema: &str, more: &[(&str, &str)]) -> String {
        let parts: Vec<(&str, &str)> = more.iter().chain(self.parts).copied().collect();
        fill(self.template, &parts, schema)
    }
}

/// Fills `template`: each `{name}` of `parts` becomes its text, again and
/// again while the texts brought in name more of them, then `{schema}`
/// becomes the quoted schema.
fn fill(template: &str, parts: &[(&str, &str)], schema: &str) -> String {
    let mut text = template.to_owned();
    // A pass per level of fragments within fragments; a fragment cannot
    // name itself, so there are at most as many levels as fragments.
    for _ in 0..=parts.len() {
        let mut filled = false;
        for (name, part) in parts {
            let placeholder = format!("{{{name}}}");
            if text.contains(&placeholder) {
                text = text.replace(&placeholder, part);
                filled = true;
            }
        }
        if !filled {
            break;
        }
    }
    text.replace("{schema}", &quote(schema))
}

/// A statement of the registry as the statements test reads it.
#[derive(Debug, Clone)]
pub struct NamedStatement {
    /// Its name here (`Statements`' field).
    pub name: &'static str,
    /// The const that holds its template, from `rust/engine/`.
    pub source: &'static str,
    /// How the text stands for the statements sent (empty: it is the one).
    pub note: &'static str,
    /// Its text, filled.
    pub text: String,
}

/// Lists every statement once: `Statements` (each filled for one schema)
/// and `statements` (each by name, for the statements test) are made from
/// this one list, so neither can miss one the other has. The statements
/// of `filled_where_they_run` are not kept in `Statements`: the
/// migration's run before there is an engine, and `ui_counts` is one form
/// of a statement built per call.
macro_rules! registry {
    (
        kept { $($name:ident = $statement:path;)* }
        filled_where_they_run { $($other:ident = $other_statement:path;)* }
    ) => {
        /// Every statement, filled for one schema.
        #[derive(Debug)]
        pub(crate) struct Statements {
            $(pub(crate) $name: String,)*
        }

        impl Statements {
            pub(crate) fn new(schema: &str) -> Statements {
                Statements { $($name: $statement.fill(schema),)* }
            }
        }

        /// Every statement the engine prepares, filled for `schema`, by
        /// name, in the order of `rust/engine/statements.sql`.
        pub fn statements(schema: &str) -> Vec<NamedStatement> {
            vec![
                $(NamedStatement {
                    name: stringify!($name),
                    source: stringify!($statement),
                    note: $statement.note,
                    text: $statement.fill(schema),
                },)*
                $(NamedStatement {
                    name: stringify!($other),
                    source: stringify!($other_statement),
                    note: $other_statement.note,
                    text: $other_statement.fill(schema),
                },)*
            ]
        }
    };
}

registry! {
    kept {
        // lease: this process as an owner, and giving roots back
        owner_register = lease::owner::REGISTER;
        owner_heartbeat = lease::owner::HEARTBEAT;
        owner_release = lease::owner::RELEASE;
        owner_gone = lease::gone::OWNER_GONE;
        owners_gone_here = lease::gone::OWNERS_GONE_HERE;
        cancelled = lease::owner::CANCELLED;
        release = lease::release::RELEASE;
        // checkpoint: starting workflows, saving steps
        start_root = checkpoint::start::START_ROOT;
        start_roots = checkpoint::start::START_ROOTS;
        start_child = checkpoint::start::START_CHILD;
        replay_child = checkpoint::start::REPLAY_CHILD;
        holder = checkpoint::start::HOLDER;
        root_input = checkpoint::start::ROOT_INPUT;
        history = checkpoint::start::HISTORY;
        flush = checkpoint::writer::FLUSH;
        diagnose = checkpoint::writer::DIAGNOSE;
        // wait: suspension, messages and events, results
        lock_waits = wait::suspend::LOCK_WAITS;
        wait_on = wait::suspend::WAIT_ON;
        clear_wait = wait::suspend::CLEAR_WAIT;
        db_now = wait::suspend::NOW;
        lock_target = wait::suspend::LOCK_TARGET;
        suspend = wait::suspend::SUSPEND;
        wake = wait::suspend::WAKE;
        note_wait = wait::suspend::NOTE;
        save_sleep = wait::suspend::SAVE_SLEEP;
        send = wait::messages::SEND;
        own_message = wait::messages::OWN_MESSAGE;
        take_message = wait::messages::TAKE;
        set_event = wait::messages::SET_EVENT;
        get_event = wait::messages::GET_EVENT;
        run_state = wait::results::RUN_STATE;
        // queue: queues, claims, schedules, recovery, executors
        create_queue = queue::CREATE_QUEUE;
        pause_queue = queue::PAUSE_QUEUE;
        enqueue = queue::ENQUEUE;
        enqueue_rows = queue::enqueuer::ENQUEUE_ROWS;
        lock_queue = queue::LOCK_QUEUE;
        claim = queue::CLAIM_QUEUED;
        claim_unqueued = queue::CLAIM_UNQUEUED;
        fail_unstartable = queue::FAIL_UNSTARTABLE;
        waiting_rank = queue::WAITING_RANK_QUEUED;
        waiting_rank_unqueued = queue::WAITING_RANK_UNQUEUED;
        next_due = queue::NEXT_DUE;
        resume = queue::RESUME;
        schedule_register = queue::schedule::REGISTER;
        schedule_read = queue::schedule::READ;
        schedule_advance = queue::schedule::ADVANCE;
        recovery_pass = queue::recovery::RECOVERY_PASS;
        register_executor = queue::executors::REGISTER_EXECUTOR;
        unregister_executor = queue::executors::UNREGISTER_EXECUTOR;
        // admin: cancel, fork, gc
        cancel = admin::cancel::CANCEL;
        cancelled_in_tree = admin::cancel::CANCELLED_IN_TREE;
        fork = admin::fork::FORK;
        gc = admin::gc::GC;
        // read: runs, trees, queues, and the ui's pages
        list_runs = read::runs::LIST;
        run_info = read::runs::GET;
        tree = read::tree::TREE;
        list_queues = read::queues::LIST_QUEUES;
        ui_page = read::ui::PAGE;
        ui_resolve = read::ui::RESOLVE;
        ui_named = read::ui::NAMED;
        ui_schedules = read::ui::SCHEDULES;
        ui_ahead = read::ui::AHEAD;
        ui_estimate = read::ui::ESTIMATE;
        ui_workflows = read::ui::WORKFLOWS;
        ui_page_version = read::ui::PAGE_VERSION;
        ui_tree_version = read::ui::TREE_VERSION;
        ui_attempts = read::ui::ATTEMPTS;
        ui_messages = read::ui::MESSAGES;
        ui_sleeps = read::ui::SLEEPS;
        ui_value = read::ui::VALUE;

    }
    filled_where_they_run {
        // connect: migrating the schema
        migration_lock = connect::migrate::LOCK;
        migration_present = connect::migrate::PRESENT;
        migration_version = connect::migrate::VERSION;
        migration_record = connect::migrate::RECORD;
        ui_counts = read::ui::COUNTS;
    }
}

#[cfg(test)]
mod tests {
    use super::fill;

    #[test]
    fn fragments_within_fragments_are_filled() {
        let parts = [("outer", "a {inner} b"), ("inner", "{schema}.x")];
        assert_eq!(fill("SELECT {outer}", &parts, "s1"), "SELECT a \"s1\".x b");
    }
}
