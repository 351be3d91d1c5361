//! `statelite`: the management-node CLI (xCAT-style table tools, liteimg, nodeset, serve, demo).
//!
//! Each subcommand's arguments and code live in their own module of the `statelite_tools`
//! library; this file only wires them to clap.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use statelite_tools::{cmd_lite, cmd_tables};

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
    #[arg(
        long,
        global = true,
        env = "STATELITE_TABLES",
        default_value = "/etc/statelite/tables"
    )]
    tables: std::path::PathBuf,

    #[command(subcommand)]
    command: Command,
}

/// One variant per subcommand; its arguments type (in the library) carries the help text,
/// and one match arm in `main` runs it.
#[derive(Subcommand)]
enum Command {
    /// Print a table in tabdump format (or list the tables).
    Tabdump(cmd_tables::TabdumpArgs),
    /// Replace (-a: extend) a table from a tabdump file, all or nothing.
    Tabrestore(cmd_tables::TabrestoreArgs),
    /// Add, change or delete table rows: chtab node=n01 noderes.nfsserver=10.0.0.1
    Chtab(cmd_tables::ChtabArgs),
    /// Show the litefile entries that apply to each node of a noderange.
    Litefile(cmd_lite::LitefileArgs),
    /// Show each node's litetree directories, variables expanded, in search order.
    Litetree(cmd_lite::LitetreeArgs),
    /// Show an image's litefile entries; --check reports rule violations.
    Ilitefile(cmd_lite::IlitefileArgs),
    /// Summarise statelite for nodes: image, state directory, litefile, litetree.
    Lslite(cmd_lite::LsliteArgs),
    /// Rewrite an image for symlink mode (xCAT liteimg): link/copy the litefile entries.
    Liteimg(statelite_tools::liteimg::LiteimgArgs),
    /// Tell running nodes the image changed: bump its generation so their caches refresh.
    Imgupdate(statelite_tools::liteimg::LiteimgArgs),
    /// Build a statelite initramfs (static mountd, litectl, busybox, modules, /init).
    Mkinitrd(statelite_tools::mkinitrd::MkinitrdArgs),
    /// Write PXE/grub2/yaboot boot files: nodeset <noderange> statelite[=<image>]
    Nodeset(statelite_tools::nodeset::NodesetArgs),
    /// Run the query service nodes use at boot (XCAT=<host>:<port>).
    Serve(statelite_tools::serve::ServeArgs),
    /// Guided tour: mount a sample image in FUSE mode and show each litefile option at work.
    Demo(statelite_tools::demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let tables = &cli.tables;
    let result: Result<ExitCode, String> = match cli.command {
        Command::Tabdump(args) => args.run(tables).map_err(|e| e.to_string()),
        Command::Tabrestore(args) => args.run(tables).map_err(|e| e.to_string()),
        Command::Chtab(args) => args.run(tables).map_err(|e| e.to_string()),
        Command::Litefile(args) => args.run(tables).map_err(|e| e.to_string()),
        Command::Litetree(args) => args.run(tables).map_err(|e| e.to_string()),
        Command::Ilitefile(args) => args.run(tables).map_err(|e| e.to_string()),
        Command::Lslite(args) => args.run(tables).map_err(|e| e.to_string()),
        Command::Liteimg(args) => {
            statelite_tools::liteimg::run_cli(&args, tables).map(|()| ExitCode::SUCCESS)
        }
        Command::Imgupdate(args) => {
            statelite_tools::imgupdate::run_cli(&args, tables).map(|()| ExitCode::SUCCESS)
        }
        Command::Mkinitrd(args) => args.run(tables),
        Command::Nodeset(args) => args.run(tables).map_err(|e| e.to_string()),
        Command::Serve(args) => args.run(tables),
        Command::Demo(args) => args.run().map_err(|e| e.to_string()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("statelite: {e}");
            ExitCode::FAILURE
        }
    }
}
