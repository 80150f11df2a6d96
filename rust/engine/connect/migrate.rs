//! Schema migrations: numbered SQL files from `migrations/`, compiled into
//! the binary and applied in one transaction under an advisory lock, so any
//! number of processes may call `init()` at once.

use tokio_postgres::Client;

use crate::engine::connect::config::quote;
use crate::engine::error::EngineError;
use crate::engine::sql::Sql;
use crate::engine::workflow::col;

/// (version, file name, SQL), in order. Append only: never edit a released file.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "0001_initial.sql",
        include_str!("../../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "0002_owner_grace.sql",
        include_str!("../../../migrations/0002_owner_grace.sql"),
    ),
    (
        3,
        "0003_queues.sql",
        include_str!("../../../migrations/0003_queues.sql"),
    ),
    (
        4,
        "0004_schedules.sql",
        include_str!("../../../migrations/0004_schedules.sql"),
    ),
    (
        5,
        "0005_sql_enqueue.sql",
        include_str!("../../../migrations/0005_sql_enqueue.sql"),
    ),
    (
        6,
        "0006_executors.sql",
        include_str!("../../../migrations/0006_executors.sql"),
    ),
    (
        7,
        "0007_key_turns.sql",
        include_str!("../../../migrations/0007_key_turns.sql"),
    ),
    (
        8,
        "0008_messages.sql",
        include_str!("../../../migrations/0008_messages.sql"),
    ),
    (9, "0009_waits.sql", include_str!("../../../migrations/0009_waits.sql")),
    (
        10,
        "0010_root_indexes.sql",
        include_str!("../../../migrations/0010_root_indexes.sql"),
    ),
    (
        11,
        "0011_attempts.sql",
        include_str!("../../../migrations/0011_attempts.sql"),
    ),
    (
        12,
        "0012_cascade_by_trigger.sql",
        include_str!("../../../migrations/0012_cascade_by_trigger.sql"),
    ),
    (
        13,
        "0013_wake_only_waiters.sql",
        include_str!("../../../migrations/0013_wake_only_waiters.sql"),
    ),
    (
        14,
        "0014_fair_claims.sql",
        include_str!("../../../migrations/0014_fair_claims.sql"),
    ),
    (
        15,
        "0015_schedule_specs_and_enqueue_checks.sql",
        include_str!("../../../migrations/0015_schedule_specs_and_enqueue_checks.sql"),
    ),
    (
        16,
        "0016_message_senders.sql",
        include_str!("../../../migrations/0016_message_senders.sql"),
    ),
    (
        17,
        "0017_enqueue_time_checks.sql",
        include_str!("../../../migrations/0017_enqueue_time_checks.sql"),
    ),
    (
        18,
        "0018_enqueued_by.sql",
        include_str!("../../../migrations/0018_enqueued_by.sql"),
    ),
    (
        19,
        "0019_enqueue_value_checks.sql",
        include_str!("../../../migrations/0019_enqueue_value_checks.sql"),
    ),
    (
        20,
        "0020_owner_process.sql",
        include_str!("../../../migrations/0020_owner_process.sql"),
    ),
];

/// The newest schema version this library knows.
pub const LATEST_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// First key of the advisory lock that serializes migrations (the second is
/// the schema's hash). Chosen at random; spells nothing.
const LOCK_CLASS: i32 = 0x6475_7261;

/// Brings `schema` to `LATEST_VERSION`. Returns the version found before.
pub(super) async fn migrate(client: &mut Client, schema: &str) -> Result<i32, EngineError> {
    // Fast path without the lock: many processes starting against an
    // up-to-date schema should not queue behind each other.
    if let Some(version) = current_version(client, schema).await? {
        check_not_newer(schema, version)?;
        if version == LATEST_VERSION {
            return Ok(version);
        }
    }
    let context = |what: &str| format!("migrating schema {schema:?}: {what}");
    let tx = client
        .transaction()
        .await
        .map_err(|e| EngineError::database(context("begin"), &e))?;
    tx.execute(&LOCK.fill(schema), &[&LOCK_CLASS, &schema])
        .await
        .map_err(|e| EngineError::database(context("waiting for the migration lock"), &e))?;
    tx.batch_execute(&CREATE.fill(schema))
        .await
        .map_err(|e| EngineError::database(context("creating the migration table"), &e))?;
    let row = tx
        .query_one(&VERSION.fill(schema), &[])
        .await
        .map_err(|e| EngineError::database(context("reading the version"), &e))?;
    let found: i32 = col(&row, "version")?;
    check_not_newer(schema, found)?;
    for &(version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > found) {
        // The migration files name no schema: it is the first of the search path.
        let search_path = format!("SET LOCAL search_path TO {}, pg_catalog;\n", quote(schema));
        tx.batch_execute(&(search_path + sql))
            .await
            .map_err(|e| EngineError::database(context(&format!("applying {name}")), &e))?;
        tx.execute(&RECORD.fill(schema), &[&version, &name])
            .await
            .map_err(|e| EngineError::database(context(&format!("recording {name}")), &e))?;
    }
    tx.commit()
        .await
        .map_err(|e| EngineError::database(context("commit"), &e))?;
    Ok(found)
}

/// Checks, without changing anything, that `schema` is at `LATEST_VERSION`.
pub(super) async fn require_current(client: &Client, schema: &str) -> Result<i32, EngineError> {
    let found = current_version(client, schema).await?;
    match found {
        Some(version) if version == LATEST_VERSION => Ok(version),
        Some(version) if version > LATEST_VERSION => check_not_newer(schema, version).map(|()| version),
        _ => Err(EngineError::SchemaNotCurrent {
            schema: schema.to_owned(),
            found,
            wanted: LATEST_VERSION,
        }),
    }
}

/// The applied version, or `None` when the schema has no migration table yet.
async fn current_version(client: &Client, schema: &str) -> Result<Option<i32>, EngineError> {
    let row = client
        .query_one(&PRESENT.fill(schema), &[&schema])
        .await
        .map_err(|e| EngineError::database(format!("reading the version of schema {schema:?}"), &e))?;
    if !col::<bool>(&row, "present")? {
        return Ok(None);
    }
    let row = client
        .query_one(&VERSION.fill(schema), &[])
        .await
        .map_err(|e| EngineError::database(format!("reading the version of schema {schema:?}"), &e))?;
    Ok(Some(col(&row, "version")?))
}

fn check_not_newer(schema: &str, found: i32) -> Result<(), EngineError> {
    if found > LATEST_VERSION {
        return Err(EngineError::SchemaTooNew {
            schema: schema.to_owned(),
            found,
            supported: LATEST_VERSION,
        });
    }
    Ok(())
}

/// Waits for the migration lock of the schema (`$1` its class, `$2` the
/// schema), until the transaction ends.
pub(crate) const LOCK: Sql = Sql::new("SELECT pg_advisory_xact_lock($1, hashtext($2))");

/// The schema and its table of applied migrations, if missing. Two
/// statements, sent as one simple query; not a prepared statement, so not
/// in the registry (the statements test runs the migrations).
const CREATE: Sql = Sql::new(
    "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.migration (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
);

/// Whether the schema `$1` has its table of migrations.
pub(crate) const PRESENT: Sql = Sql::new("SELECT to_regclass(format('%I.migration', $1::text)) IS NOT NULL AS present");

/// The schema's version: its last migration applied (0: none).
pub(crate) const VERSION: Sql = Sql::new("SELECT coalesce(max(version), 0) AS version FROM {schema}.migration");

/// Records that the migration `$1` (named `$2`) was applied.
pub(crate) const RECORD: Sql = Sql::new("INSERT INTO {schema}.migration (version, name) VALUES ($1, $2)");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_contiguous_from_one() {
        for (i, (version, name, _)) in MIGRATIONS.iter().enumerate() {
            let expected = i32::try_from(i).unwrap() + 1;
            assert_eq!(*version, expected);
            assert!(name.starts_with(&format!("{expected:04}_")), "{name}");
        }
    }
}
