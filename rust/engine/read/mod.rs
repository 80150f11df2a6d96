//! Read-only views: runs, a workflow's tree, queues, and the pages of
//! `durable ui`. Nothing here takes a run over or writes.

pub(super) mod queues;
pub(super) mod runs;
pub(super) mod tree;
pub(super) mod ui;
