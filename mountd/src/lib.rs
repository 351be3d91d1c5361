//! Library side of the node daemon, shared by `statelite-mountd` and the integration tests.

pub mod cmdline;
pub mod control;
pub mod query;
pub mod shutdown_guard;
pub mod symlink_mode;
