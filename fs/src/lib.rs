//! statelite's core library: the xCAT table format, the litefile rules engine, and the FUSE
//! overlay filesystem that serves a node's merged root.
//!
//! Where to find what:
//! - `tabfile`: xCAT `tabdump` CSV files.
//! - `rules`: litefile rows -> typed rules, precedence, constraints, path -> rule trie.
//! - `rule_table`: compiled rule tables (rules checked once on the management node).
//! - `layers`: the image, litetree sources and stores, rule origins, liteimg see-through.
//! - `inode`: the inode table.
//! - `copy_up`: copy-up, `con` concatenation, whiteouts.
//! - `overlay`: name resolution, directory merging, the FUSE operations.
//! - `reply`: what an operation answers, for either transport; passthrough backing ids.
//! - `ring`: FUSE over io_uring, the transport that serves requests on their own CPU.
//! - `mount`: mounting, threads, the image-generation watcher.
//! - `stats`: operation counters and the EROFS record.

pub mod backref;
pub mod copy_up;
pub mod dir_ahead;
pub mod inode;
pub mod layers;
pub mod mount;
pub mod origin_names;
pub mod overlay;
pub mod plus;
pub mod reply;
pub mod ring;
pub mod rule_table;
pub mod rules;
pub mod stats;
pub mod sys;
pub mod tabfile;
