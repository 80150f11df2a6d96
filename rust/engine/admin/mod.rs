//! Operations on runs that are not their own execution: cancelling,
//! forking a run from a point (`durable.fork`), deleting finished trees.

pub(super) mod cancel;
pub(super) mod fork;
pub(super) mod gc;
