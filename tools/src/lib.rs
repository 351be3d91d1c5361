//! statelite host tools.
//!
//! * [`db`]: the tables directory (schemas, loading, node attribute resolution).
//! * [`vars`]: `$node` / `$table.column` templates, litetree and statelite resolution.
//! * [`noderange`]: xCAT noderange expansion.
//! * [`cmd_tables`], [`cmd_lite`]: the table subcommands of the `statelite` CLI.

pub mod bootlab;
pub mod cmd_lite;
pub mod cmd_tables;
pub mod db;
pub mod demo;
pub mod imgupdate;
pub mod liteimg;
pub mod mkinitrd;
pub mod noderange;
pub mod nodeset;
pub mod serve;
pub mod vars;
