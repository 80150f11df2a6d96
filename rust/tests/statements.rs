//! Every statement of the engine's registry (`durable::engine::statements`):
//! filled without a placeholder left, prepared against a migrated schema,
//! and written out to `rust/engine/statements.sql`, which must match.
//!
//! The database is `$DURABLE_TEST_DSN`, else the local server on
//! 127.0.0.1:5432, in a schema of this test's own. With `DURABLE_BLESS=1`
//! the statements file is rewritten instead of compared.

use std::fmt::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use durable::engine::{Engine, NamedStatement, Options, statements};
use tokio_postgres::NoTls;

/// The schema the statements file is written for.
const FILE_SCHEMA: &str = "durable";

fn dsn() -> String {
    std::env::var("DURABLE_TEST_DSN").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn statements_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rust/engine/statements.sql")
}

/// `{name}` where `name` is a word: a placeholder that was not filled.
fn placeholders(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let word = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if word > 0 && after[word..].starts_with('}') {
            found.push(&rest[open..open + word + 2]);
        }
        rest = after;
    }
    found
}

/// The statements file as the registry gives it now.
fn render(all: &[NamedStatement]) -> String {
    let mut out = String::from(
        "-- Generated from the engine's statement registry (rust/engine/sql.rs): do not edit.
-- Regenerate with:
--   DURABLE_BLESS=1 .venv/bin/python tests/_testdb.py cargo test --test statements
--
-- Every statement the engine prepares, by its name in the registry, filled
-- for the schema \"durable\", with the const that holds its template (under
-- rust/engine/). A statement built per call is written in one of its forms,
-- which prepares as the others do; its note says which form.
--
-- Not listed: the migrations (migrations/) and the creation of the schema
-- and its migration table before them, transaction control and session
-- settings (BEGIN, COMMIT, ROLLBACK, SET ..., LISTEN), the probe for
-- transaction-mode poolers, and the statements of transaction steps, which
-- are the user's.
",
    );
    for statement in all {
        let _ = write!(
            out,
            "
-- name: {}
-- from: {}
",
            statement.name, statement.source
        );
        if !statement.note.is_empty() {
            let _ = writeln!(out, "-- note: {}", statement.note);
        }
        out.push_str(statement.text.trim());
        out.push_str(";\n");
    }
    out
}

#[test]
fn statement_names_are_unique() {
    let all = statements(FILE_SCHEMA);
    let mut names: Vec<&str> = all.iter().map(|s| s.name).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before, "a statement name is registered twice");
}

#[test]
fn every_placeholder_is_filled() {
    let unfilled: Vec<String> = statements(FILE_SCHEMA)
        .iter()
        .filter(|s| !placeholders(&s.text).is_empty())
        .map(|s| format!("{} ({}): {:?}", s.name, s.source, placeholders(&s.text)))
        .collect();
    assert!(
        unfilled.is_empty(),
        "placeholders left unfilled:\n{}",
        unfilled.join("\n")
    );
}

#[test]
fn placeholders_are_found() {
    assert_eq!(
        placeholders("SELECT {schema}.x, '{}', '{a,b}' {x_1}"),
        ["{schema}", "{x_1}"]
    );
}

#[test]
fn the_statements_file_is_current() {
    let rendered = render(&statements(FILE_SCHEMA));
    let path = statements_file();
    if std::env::var("DURABLE_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &rendered).expect("write the statements file");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != rendered {
        let first = checked_in
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| checked_in.lines().count().min(rendered.lines().count()));
        panic!(
            "{} is not what the statement registry gives (first difference at line {}): \
             a statement changed without its file. Regenerate it with\n  \
             DURABLE_BLESS=1 .venv/bin/python tests/_testdb.py cargo test --test statements\n\
             and commit it with the change.",
            path.display(),
            first + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_prepares_against_a_migrated_schema() {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    let schema = format!("t_statements_{}_{nanos}", std::process::id());
    let options = Options {
        schema: schema.clone(),
        ..Options::default()
    };
    // Connecting migrates the schema.
    let engine = Engine::connect(&dsn(), &options).await.expect("connect and migrate");
    engine.close().await;
    let (client, connection) = tokio_postgres::connect(&dsn(), NoTls).await.expect("test database");
    tokio::spawn(connection);
    let mut failed = Vec::new();
    for statement in statements(&schema) {
        if let Err(err) = client.prepare(&statement.text).await {
            failed.push(format!("{} ({}): {err:?}", statement.name, statement.source));
        }
    }
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("drop the test schema");
    assert!(
        failed.is_empty(),
        "statements that do not prepare:\n{}",
        failed.join("\n")
    );
}
