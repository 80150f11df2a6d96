//! Who holds what: this process as a lease owner, the workflows it holds,
//! the notifications that arrive on the owner's session, and which holders
//! this machine can prove gone.

pub(super) mod gone;
pub(super) mod holds;
pub(super) mod notifications;
pub(super) mod owner;
pub(super) mod process;
pub(super) mod release;
