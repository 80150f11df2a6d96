//! Values as they cross to and from Postgres: JSON as text, times, and the
//! parameters and cells of transaction steps.

pub(super) mod jsonb;
pub(super) mod moment;
pub(super) mod sql_values;
