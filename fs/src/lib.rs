//! statelite's core library: the xCAT table format, the litefile rules engine, and the FUSE
//! overlay filesystem that serves a node's merged root.

pub mod rules;
pub mod tabfile;
