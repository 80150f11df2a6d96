//! Waiting: durable sleeps and suspension, messages and events, and waiting
//! for a run's result.

pub(super) mod messages;
pub(super) mod results;
pub(super) mod suspend;
