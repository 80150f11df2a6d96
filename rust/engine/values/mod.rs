//! Values as they cross to and from Postgres: JSON as text, times, the
//! process's clock, and the parameters and cells of transaction steps.

pub(super) mod clock;
pub(super) mod jsonb;
pub(super) mod moment;
pub(super) mod sql_values;
