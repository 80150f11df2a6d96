//! Running a workflow: starting or taking it over, and saving its steps and
//! results (the group-committing starter and writer, transaction steps).

pub(super) mod start;
pub(super) mod starter;
pub(super) mod steps;
pub(super) mod transaction;
pub(super) mod writer;
