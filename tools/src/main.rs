//! `statelite`: the management-node CLI (xCAT-style table tools, liteimg, nodeset, serve, demo).
//!
//! Each subcommand's arguments and code live in their own module of the `statelite_tools`
//! library; this file only wires them to clap.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "statelite",
    version,
    about = "Manage statelite diskless images and their xCAT tables",
    long_about = "Manage statelite diskless images: the xCAT litefile/litetree/statelite tables, \
                  image rewriting (liteimg) and node boot configuration.\n\n\
                  Tables are tabdump-format CSV files, one per table, in --tables DIR, \
                  else $STATELITE_TABLES, else /etc/statelite/tables."
)]
struct Cli {
    /// Directory holding the table files (litefile.csv, litetree.csv, ...).
    #[arg(long, global = true, env = "STATELITE_TABLES", default_value = "/etc/statelite/tables")]
    tables: std::path::PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<(), String> = match cli.command {};
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("statelite: {e}");
            ExitCode::FAILURE
        }
    }
}
