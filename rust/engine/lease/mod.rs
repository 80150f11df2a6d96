//! Who holds what: this process as a lease owner, the workflows it holds,
//! and the notifications that arrive on the owner's session.

pub(super) mod holds;
pub(super) mod notifications;
pub(super) mod owner;
pub(super) mod release;
