//! `statelite liteimg`: rewrites a statelite image the way xCAT's `liteimg` does, so that
//! symlink mode (xCAT's `rc.statelite`, or `statelite-mountd --mode symlink`) can boot it.
//!
//! Layout produced, for an image root `R` (see SPEC §4 and xCAT's statelite.pm):
//! - a `link*` entry (or blank options) at the top of its hierarchy moves to `R/.default/P`,
//!   and two relative symlinks are made: `R/P -> <up>/.statelite/tmpfs/P` and
//!   `R/.statelite/tmpfs/P -> ../../<up>/.default/P`, where `<up>` is xCAT's `getRelDir`:
//!   one `..` per directory above `P` (`.` for a top-level entry). A missing entry is created
//!   in `.default` (empty directory for `dir/` entries, empty file otherwise).
//! - a `link*` entry below a `link*` directory entry only needs to exist in `.default`
//!   (its parent was moved there as a whole).
//! - any other entry stays where it is and is copied (`cp -a`) to `R/.default/P`; a missing
//!   one is first created in the image (empty directory or file), as xCAT does. An entry
//!   below another copied entry is covered by its parent's copy.
//!
//! Unlike xCAT, every change is recorded in `.statelite/liteimg.json`, so a later run with a
//! different litefile undoes exactly what the previous run did and nothing else: it never
//! deletes image content it did not create (xCAT's `recoverFiles` does `rm -rf` on the image
//! path of every changed non-link entry). `.statelite/litefile.save` keeps xCAT's format
//! (`image<TAB>options<TAB>path` per line) so xCAT and humans can read it; an image last
//! processed by xCAT (a `litefile.save` without our record) is adopted conservatively.
//!
//! The run is plan-then-apply: every check (rules, hostile symlinks, conflicts) happens before
//! the first change, so an error leaves the image as it was.

pub mod safe_fs;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use indicatif::{ProgressBar, ProgressStyle};
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};
use statelite_fs::rules::{LiteRule, Method, RuleSet, Storage, Violation, read_litefile};
use statelite_fs::tabfile::{TabError, Table, write_file_atomic};

use safe_fs::{Existing, HardLinks, Kind};

/// Where liteimg keeps its state inside the image.
pub const STATE_DIR: &str = ".statelite";
/// The default copies and moved link targets.
pub const DEFAULT_DIR: &str = ".default";
/// xCAT's record of the rows applied (one `image<TAB>options<TAB>path` per line).
pub const SAVE_FILE: &str = ".statelite/litefile.save";
/// Our exact record of what was changed, for a safe undo.
pub const RECORD_FILE: &str = ".statelite/liteimg.json";
const RECORD_VERSION: u32 = 1;

/// Errors of a liteimg run. Each names the image path involved.
#[derive(Debug, thiserror::Error)]
pub enum LiteimgError {
    #[error("{}", .0)]
    Table(#[from] TabError),
    #[error("the litefile rules for image {image} are not valid for liteimg:\n  {}",
            .violations.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("\n  "))]
    Violations {
        image: String,
        violations: Vec<Violation>,
    },
    #[error("{image}: no litefile entries apply to this image; nothing to do")]
    NoEntries { image: String },
    #[error("cannot open the image root {}: {source}", .root.display())]
    Root { root: PathBuf, source: io::Error },
    #[error("{path}: {problem}")]
    Conflict { path: String, problem: String },
    #[error("{path}: {action}: {source}")]
    Io {
        path: String,
        action: &'static str,
        source: io::Error,
    },
    #[error("{}: unreadable liteimg record ({problem}); remove it only if you know the image \
             was restored by hand", .file.display())]
    Record { file: PathBuf, problem: String },
}

fn io_at<'a>(path: &'a str, action: &'static str) -> impl FnOnce(io::Error) -> LiteimgError + 'a {
    move |source| {
        let source = if matches!(source.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) {
            io::Error::other(
                "a parent is a symlink or not a directory (liteimg never follows symlinks \
                 inside the image)",
            )
        } else {
            source
        };
        LiteimgError::Io {
            path: path.to_string(),
            action,
            source,
        }
    }
}

/// How an entry is laid out in the image (what must be undone if it changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Moved to `.default`, replaced by the two-level link chain.
    Link,
    /// Below a `Link` directory: only has to exist in `.default`.
    LinkChild,
    /// Kept in place, copied to `.default`.
    Copy,
    /// Below a `Copy` directory: covered by the parent's copy; only has to exist.
    CopyChild,
    /// A link entry that is a symlink in the image (e.g. `/etc/mtab -> /proc/self/mounts`):
    /// left alone, as xCAT does for `/etc/mtab`.
    Skipped,
}

/// One entry as applied, in the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Relative to the image root, no leading or trailing `/`.
    pub path: String,
    pub is_dir: bool,
    /// Canonical options (xCAT spelling).
    pub options: String,
    pub layout: Layout,
    /// True when liteimg created the entry's content: for `Link`/`LinkChild` the empty
    /// `.default` entry, for `Copy`/`CopyChild` the empty entry in the image.
    pub created: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    version: u32,
    image: String,
    entries: Vec<Applied>,
    /// Parent directories liteimg had to create (relative to the root); removed again when
    /// empty and no longer needed.
    created_dirs: BTreeSet<String>,
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub linked: usize,
    pub copied: usize,
    pub refreshed: usize,
    pub undone: usize,
    pub unchanged: usize,
    /// Entries created because they were absent from the image.
    pub created: usize,
    pub warnings: Vec<String>,
}

impl Summary {
    pub fn changed(&self) -> bool {
        self.linked + self.copied + self.refreshed + self.undone + self.created > 0
    }
}

/// The `image<TAB>options<TAB>/path[/]` lines of `litefile.save`.
fn save_text(image: &str, entries: &[Applied]) -> String {
    let mut out = String::new();
    for e in entries {
        let slash = if e.is_dir { "/" } else { "" };
        out.push_str(&format!("{image}\t{}\t/{}{slash}\n", e.options, e.path));
    }
    out
}

/// xCAT's `getRelDir`: `..` per directory above the entry, `.` at the top level.
fn up_dirs(rel: &str) -> String {
    let depth = rel.matches('/').count();
    if depth == 0 {
        ".".to_string()
    } else {
        vec![".."; depth].join("/")
    }
}

/// Target of the image's link: `R/P -> <up>/.statelite/tmpfs/P`.
pub fn image_link_target(rel: &str) -> String {
    format!("{}/{STATE_DIR}/tmpfs/{rel}", up_dirs(rel))
}

/// Target of the tmpfs link: `R/.statelite/tmpfs/P -> ../../<up>/.default/P`.
pub fn tmpfs_link_target(rel: &str) -> String {
    format!("../../{}/{DEFAULT_DIR}/{rel}", up_dirs(rel))
}

fn tmpfs_rel(rel: &str) -> String {
    format!("{STATE_DIR}/tmpfs/{rel}")
}
fn default_rel(rel: &str) -> String {
    format!("{DEFAULT_DIR}/{rel}")
}

/// Decides each rule's layout and collects the parent/child rules xCAT's liteimg enforces
/// on top of [`RuleSet::violations`].
fn layouts(rules: &RuleSet) -> (Vec<(LiteRule, Layout)>, Vec<Violation>) {
    let mut out: Vec<(LiteRule, Layout)> = Vec::new();
    let mut problems = Vec::new();
    for rule in rules.rules() {
        let rel = rule.path.relative();
        if rel == DEFAULT_DIR
            || rel == STATE_DIR
            || rel.starts_with(".default/")
            || rel.starts_with(".statelite/")
        {
            problems.push(Violation {
                message: format!("{} lies in liteimg's own directories", rule.path),
                lines: vec![rule.line],
            });
            continue;
        }
        let is_link = rule.options.method() == Method::Link;
        // Rules are sorted by path, so the nearest ancestor is the last one that is one.
        let parent = out
            .iter()
            .rev()
            .find(|(p, _)| p.path.is_ancestor_of(&rule.path));
        let layout = match parent {
            None if is_link => Layout::Link,
            None => Layout::Copy,
            Some((p, pl)) => {
                let parent_link = matches!(pl, Layout::Link | Layout::LinkChild);
                let bad = if parent_link && !is_link {
                    Some("can only use link-based options")
                } else if parent_link && rule.storage() == Storage::Ro {
                    Some("should not use \"link,ro\"")
                } else if !parent_link && is_link {
                    Some("should not use link-based options")
                } else {
                    None
                };
                if let Some(why) = bad {
                    problems.push(Violation {
                        message: format!(
                            "based on the option {:?} of {}, {} {why}",
                            p.options.canonical(),
                            p.path,
                            rule.path
                        ),
                        lines: vec![p.line, rule.line],
                    });
                }
                if parent_link {
                    Layout::LinkChild
                } else {
                    Layout::CopyChild
                }
            }
        };
        out.push((rule.clone(), layout));
    }
    (out, problems)
}

/// Arguments of `statelite liteimg`.
#[derive(Debug, Clone, clap::Args)]
pub struct LiteimgArgs {
    /// Image name (`<os>-<arch>-statelite-<profile>`), as in the osimage table.
    #[arg(required_unless_present_all = ["os", "arch", "profile"], conflicts_with_all = ["os", "arch", "profile"])]
    pub image: Option<String>,
    /// Operating system (with -a and -p instead of an image name).
    #[arg(short = 'o', long = "osver", requires_all = ["arch", "profile"])]
    pub os: Option<String>,
    /// Architecture.
    #[arg(short = 'a', long, requires_all = ["os", "profile"])]
    pub arch: Option<String>,
    /// Profile.
    #[arg(short = 'p', long, requires_all = ["os", "arch"])]
    pub profile: Option<String>,
    /// The image root directory (default: osimage.rootimgdir/rootimg, else
    /// /install/netboot/<os>/<arch>/<profile>/rootimg).
    #[arg(long, value_name = "DIR")]
    pub rootimg: Option<PathBuf>,
}

/// The image name and root directory an image selection (`IMAGE` or `-o -a -p`, and
/// `--rootimg`) designates; shared by `liteimg` and `imgupdate`.
pub fn resolve_image(args: &LiteimgArgs, tables: &Path) -> Result<(String, PathBuf), String> {
    let image = match (&args.image, &args.os, &args.arch, &args.profile) {
        (Some(name), ..) => name.clone(),
        (None, Some(os), Some(arch), Some(profile)) => format!("{os}-{arch}-statelite-{profile}"),
        _ => return Err("give an image name, or all of -o OS -a ARCH -p PROFILE".into()),
    };
    let root = match &args.rootimg {
        Some(dir) => dir.clone(),
        None => image_root_from_tables(tables, &image, args)?,
    };
    Ok((image, root))
}

/// Runs `statelite liteimg` with messages for a human.
pub fn run_cli(args: &LiteimgArgs, tables: &Path) -> Result<(), String> {
    let (image, root) = resolve_image(args, tables)?;
    let litefile = tables.join("litefile.csv");
    let rows = read_litefile(&litefile).map_err(|e| e.to_string())?;
    let rules = RuleSet::for_image(&rows, &image);
    eprintln!("Modifying {} ...", root.display());
    let progress = std::io::stderr().is_terminal();
    let summary = liteimg(&root, &rules, progress).map_err(|e| match e {
        LiteimgError::Violations { .. } | LiteimgError::Table(_) => {
            format!(
                "{e}\n(fix {} and rerun; the image was not changed)",
                litefile.display()
            )
        }
        other => format!("liteimg of {image} in {}: {other}", root.display()),
    })?;
    for w in &summary.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "Modifying {} done: {} linked, {} copied, {} refreshed, {} undone, {} created, {} unchanged.",
        root.display(),
        summary.linked,
        summary.copied,
        summary.refreshed,
        summary.undone,
        summary.created,
        summary.unchanged
    );
    Ok(())
}

fn image_root_from_tables(
    tables: &Path,
    image: &str,
    args: &LiteimgArgs,
) -> Result<PathBuf, String> {
    let file = tables.join("osimage.csv");
    let from_table = if file.exists() {
        let table = Table::read(&file).map_err(|e| e.to_string())?;
        let row = table
            .rows
            .iter()
            .find(|r| table.get(r, "imagename").map(str::trim) == Some(image));
        row.and_then(|r| table.get(r, "rootimgdir"))
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| PathBuf::from(d).join("rootimg"))
    } else {
        None
    };
    if let Some(root) = from_table {
        return Ok(root);
    }
    match (&args.os, &args.arch, &args.profile) {
        (Some(os), Some(arch), Some(profile)) => Ok(PathBuf::from(format!(
            "/install/netboot/{os}/{arch}/{profile}/rootimg"
        ))),
        _ => Err(format!(
            "cannot find the root of image {image}: no osimage row with a rootimgdir in {} \
             (give --rootimg DIR, or -o -a -p)",
            file.display()
        )),
    }
}

/// A planned change, checked before anything is modified.
#[derive(Debug)]
enum Step {
    Undo(Applied),
    Apply {
        rule: LiteRule,
        layout: Layout,
        previous: Option<Applied>,
    },
}

struct Run<'a> {
    root: OwnedFd,
    image: &'a str,
    record: Record,
    summary: Summary,
    links: HardLinks,
}

/// Rewrites the image at `root` for `rules`, undoing the previous run where it differs.
pub fn liteimg(root: &Path, rules: &RuleSet, progress: bool) -> Result<Summary, LiteimgError> {
    let (planned, mut violations) = layouts(rules);
    violations.extend(rules.violations().iter().cloned());
    violations.sort_by(|a, b| a.lines.cmp(&b.lines));
    if !violations.is_empty() {
        return Err(LiteimgError::Violations {
            image: rules.image().to_string(),
            violations,
        });
    }
    if planned.is_empty() {
        return Err(LiteimgError::NoEntries {
            image: rules.image().to_string(),
        });
    }
    let root_fd = safe_fs::open_root(root).map_err(|source| LiteimgError::Root {
        root: root.to_path_buf(),
        source,
    })?;
    let mut run = Run {
        root: root_fd,
        image: rules.image(),
        record: Record::default(),
        summary: Summary::default(),
        links: HardLinks::default(),
    };
    let previous = run.read_record(root)?;
    let steps = run.plan(&previous, &planned)?;

    let bar = if progress {
        let bar = ProgressBar::new(steps.len() as u64);
        if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {wide_msg}") {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    run.record = Record {
        version: RECORD_VERSION,
        image: run.image.to_string(),
        entries: previous.entries.clone(),
        created_dirs: previous.created_dirs.clone(),
    };
    let result = run.execute(&steps, &bar);
    bar.finish_and_clear();
    // Written even after a failed step, so the next run knows exactly what is in place.
    let saved = run.write_record();
    result?;
    saved?;
    Ok(run.summary)
}

impl Run<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    fn read_record(&self, root: &Path) -> Result<Record, LiteimgError> {
        let file = root.join(RECORD_FILE);
        let read = |rel: &str| -> Result<Option<Vec<u8>>, LiteimgError> {
            let (parent, name) = safe_fs::split_rel(rel);
            let dir = match safe_fs::open_dir_beneath(self.fd(), parent) {
                Ok(d) => d,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
                Err(e) => return Err(io_at(rel, "open")(e)),
            };
            match safe_fs::lstat_at(dir.as_fd(), OsStr::new(name)).map_err(io_at(rel, "stat"))? {
                None => return Ok(None),
                Some(st) if safe_fs::kind_of(&st) != Kind::File => {
                    return Err(LiteimgError::Conflict {
                        path: rel.into(),
                        problem: "is not a regular file".into(),
                    });
                }
                Some(_) => {}
            }
            let fd = nix::fcntl::openat(
                dir.as_fd(),
                name,
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NOFOLLOW,
                Mode::empty(),
            )
            .map_err(|e| io_at(rel, "open")(io::Error::from_raw_os_error(e as i32)))?;
            let mut buf = Vec::new();
            io::Read::read_to_end(&mut std::fs::File::from(fd), &mut buf)
                .map_err(io_at(rel, "read"))?;
            Ok(Some(buf))
        };
        if let Some(bytes) = read(RECORD_FILE)? {
            let record: Record =
                serde_json::from_slice(&bytes).map_err(|e| LiteimgError::Record {
                    file: file.clone(),
                    problem: e.to_string(),
                })?;
            if record.version != RECORD_VERSION {
                return Err(LiteimgError::Record {
                    file,
                    problem: format!("version {} is not {RECORD_VERSION}", record.version),
                });
            }
            return Ok(record);
        }
        // No record of ours: an image liteimg'd by xCAT (or never). Adopt xCAT's save file
        // conservatively: copies are ours to refresh/remove, nothing in the image is.
        let Some(bytes) = read(SAVE_FILE)? else {
            return Ok(Record::default());
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut lines: Vec<(String, bool, String)> = Vec::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (options, path) = match fields.as_slice() {
                [_, options, path, ..] => (*options, *path),
                [options, path] if path.starts_with('/') => (*options, *path),
                _ => continue,
            };
            let Ok((p, is_dir)) = statelite_fs::rules::LitePath::parse(path) else {
                continue;
            };
            lines.push((p.relative().to_string(), is_dir, options.to_string()));
        }
        lines.sort();
        let mut entries: Vec<Applied> = Vec::new();
        for (path, is_dir, options) in lines {
            let is_link = options.starts_with("link");
            let parent = entries
                .iter()
                .rev()
                .find(|e| path.starts_with(&format!("{}/", e.path)));
            let layout = match parent.map(|p| p.layout) {
                None if is_link => Layout::Link,
                None => Layout::Copy,
                Some(Layout::Link | Layout::LinkChild) => Layout::LinkChild,
                Some(_) => Layout::CopyChild,
            };
            entries.push(Applied {
                path,
                is_dir,
                options,
                layout,
                created: false,
            });
        }
        Ok(Record {
            version: RECORD_VERSION,
            image: self.image.to_string(),
            entries,
            created_dirs: BTreeSet::new(),
        })
    }

    fn write_record(&self) -> Result<(), LiteimgError> {
        let mut created = Vec::new();
        safe_fs::mkdirs_beneath(
            self.fd(),
            STATE_DIR,
            Mode::from_bits_truncate(0o755),
            &mut created,
        )
        .map_err(io_at(STATE_DIR, "create"))?;
        let json = serde_json::to_vec_pretty(&self.record).map_err(|e| LiteimgError::Record {
            file: RECORD_FILE.into(),
            problem: e.to_string(),
        })?;
        // Paths are written through /proc/self/fd of the verified .statelite directory.
        let dir =
            safe_fs::open_dir_beneath(self.fd(), STATE_DIR).map_err(io_at(STATE_DIR, "open"))?;
        let base = safe_fs::fd_path(dir.as_fd());
        let write = |name: &str, data: &[u8]| -> Result<(), LiteimgError> {
            let rel = format!("{STATE_DIR}/{name}");
            let unchanged = std::fs::read(base.join(name)).is_ok_and(|old| old == data);
            if unchanged {
                return Ok(()); // keeps the file's mtime: a second run changes nothing
            }
            write_file_atomic(&base.join(name), data).map_err(|e| LiteimgError::Io {
                path: rel,
                action: "write",
                source: e,
            })
        };
        write("liteimg.json", &json)?;
        write(
            "litefile.save",
            save_text(self.image, &self.record.entries).as_bytes(),
        )
    }

    /// Checks everything and orders the work: undos children first, then applies parents
    /// first.
    fn plan(
        &mut self,
        previous: &Record,
        planned: &[(LiteRule, Layout)],
    ) -> Result<Vec<Step>, LiteimgError> {
        let old: BTreeMap<&str, &Applied> = previous
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e))
            .collect();
        let new: BTreeMap<&str, (&LiteRule, Layout)> = planned
            .iter()
            .map(|(r, l)| (r.path.relative(), (r, *l)))
            .collect();
        let keeps = |e: &Applied| {
            new.get(e.path.as_str()).is_some_and(|(r, l)| {
                r.is_dir == e.is_dir
                    && (*l == e.layout || e.layout == Layout::Skipped && *l == Layout::Link)
            })
        };
        let mut steps = Vec::new();
        let mut undone_paths: Vec<&str> = Vec::new();
        for e in previous.entries.iter().rev() {
            if !keeps(e) {
                self.check_undo(e)?;
                undone_paths.push(&e.path);
                steps.push(Step::Undo(e.clone()));
            }
        }
        let near_undo = |rel: &str| {
            undone_paths.iter().any(|u| {
                rel == *u || rel.starts_with(&format!("{u}/")) || u.starts_with(&format!("{rel}/"))
            })
        };
        for (rule, layout) in planned {
            let rel = rule.path.relative();
            let previous = old.get(rel).filter(|e| keeps(e)).map(|e| (*e).clone());
            self.check_apply(rule, *layout, previous.as_ref(), near_undo(rel))?;
            steps.push(Step::Apply {
                rule: rule.clone(),
                layout: *layout,
                previous,
            });
        }
        Ok(steps)
    }

    fn stat(&self, rel: &str) -> Result<Option<nix::sys::stat::FileStat>, LiteimgError> {
        safe_fs::lstat_beneath(self.fd(), rel).map_err(io_at(rel, "inspect"))
    }

    fn is_our_link(&self, rel: &str, target: &str) -> Result<bool, LiteimgError> {
        match self.stat(rel)? {
            Some(st) if safe_fs::kind_of(&st) == Kind::Symlink => {
                let (parent, name) = safe_fs::split_rel(rel);
                let dir = self.dir(parent)?;
                let got = safe_fs::readlink_at(dir.as_fd(), OsStr::new(name))
                    .map_err(io_at(rel, "readlink"))?;
                Ok(got == OsStr::new(target))
            }
            _ => Ok(false),
        }
    }

    fn dir(&self, rel: &str) -> Result<OwnedFd, LiteimgError> {
        safe_fs::open_dir_beneath(self.fd(), rel).map_err(io_at(rel, "open directory"))
    }

    fn check_undo(&self, e: &Applied) -> Result<(), LiteimgError> {
        if e.layout == Layout::Link {
            let st = self.stat(&e.path)?;
            if st.is_some() && !self.is_our_link(&e.path, &image_link_target(&e.path))? {
                return Err(LiteimgError::Conflict {
                    path: format!("/{}", e.path),
                    problem: format!(
                        "the previous liteimg linked this path to {DEFAULT_DIR}, but it has been \
                         replaced since (a package update?); liteimg will not overwrite it. Move \
                         it or /{DEFAULT_DIR}/{} away and rerun",
                        e.path
                    ),
                });
            }
        }
        // Parents must be reachable without symlinks. A link child lives below its parent's
        // link, so only its .default side is reachable.
        let rels = match e.layout {
            Layout::LinkChild => vec![default_rel(&e.path)],
            Layout::Copy | Layout::CopyChild => vec![e.path.clone(), default_rel(&e.path)],
            Layout::Link | Layout::Skipped => {
                vec![e.path.clone(), default_rel(&e.path), tmpfs_rel(&e.path)]
            }
        };
        for rel in rels {
            self.stat(&rel)?;
        }
        Ok(())
    }

    fn check_apply(
        &self,
        rule: &LiteRule,
        layout: Layout,
        previous: Option<&Applied>,
        near_undo: bool,
    ) -> Result<(), LiteimgError> {
        let rel = rule.path.relative();
        let default = self.stat(&default_rel(rel))?;
        if layout == Layout::LinkChild {
            // Lives in .default below its parent's link; the image side is the parent's.
            return Ok(());
        }
        let image = self.stat(rel)?;
        if layout == Layout::Link {
            self.stat(&tmpfs_rel(rel))?;
        }
        let conflict = |problem: String| LiteimgError::Conflict {
            path: rule.path.to_string(),
            problem,
        };
        if let Some(st) = &image {
            let k = safe_fs::kind_of(st);
            if rule.is_dir && !matches!(k, Kind::Dir | Kind::Symlink) {
                return Err(conflict(format!(
                    "the litefile names a directory (line {}), but the image has a file here",
                    rule.line
                )));
            }
            if !rule.is_dir && k == Kind::Dir && layout != Layout::LinkChild {
                return Err(conflict(format!(
                    "the litefile names a file (line {}), but the image has a directory here \
                     (directory entries end in '/')",
                    rule.line
                )));
            }
        }
        if layout == Layout::Link && previous.is_none() && !near_undo {
            let image_is_symlink = image
                .as_ref()
                .is_some_and(|s| safe_fs::kind_of(s) == Kind::Symlink);
            if !image_is_symlink && image.is_some() && default.is_some() {
                return Err(conflict(format!(
                    "/{} already exists and was not made by this liteimg; liteimg will not \
                     overwrite it. Move it away and rerun",
                    default_rel(rel)
                )));
            }
        }
        Ok(())
    }

    fn execute(&mut self, steps: &[Step], bar: &ProgressBar) -> Result<(), LiteimgError> {
        let mut copies = Vec::new();
        for step in steps {
            match step {
                Step::Undo(e) => {
                    bar.set_message(format!("undo /{}", e.path));
                    self.undo(e)?;
                    self.record.entries.retain(|x| x.path != e.path);
                    self.summary.undone += 1;
                }
                Step::Apply {
                    rule,
                    layout,
                    previous,
                } => {
                    bar.set_message(rule.path.to_string());
                    let applied = self.apply(rule, *layout, previous.as_ref())?;
                    if applied.layout == Layout::Copy {
                        copies.push(applied.path.clone());
                    }
                    self.record.entries.retain(|x| x.path != applied.path);
                    self.record.entries.push(applied);
                    self.record.entries.sort_by(|a, b| a.path.cmp(&b.path));
                }
            }
            bar.inc(1);
        }
        // Copies last: every child entry the copy must include exists by now.
        for rel in copies {
            self.copy_to_default(&rel)?;
        }
        self.prune_created_dirs()
    }

    fn mkdirs(&mut self, rel: &str) -> Result<OwnedFd, LiteimgError> {
        let mut created = Vec::new();
        let fd = safe_fs::mkdirs_beneath(
            self.fd(),
            rel,
            Mode::from_bits_truncate(0o755),
            &mut created,
        )
        .map_err(io_at(rel, "create directory"))?;
        self.record.created_dirs.extend(created);
        Ok(fd)
    }

    fn undo(&mut self, e: &Applied) -> Result<(), LiteimgError> {
        let rel = e.path.as_str();
        let (parent, name) = safe_fs::split_rel(rel);
        let name = OsStr::new(name);
        match e.layout {
            Layout::Skipped => {}
            Layout::Link => {
                let default_parent = self.dir(&format!("{DEFAULT_DIR}/{parent}")).ok();
                if self.is_our_link(rel, &image_link_target(rel))? {
                    let dir = self.dir(parent)?;
                    safe_fs::unlink_at(dir.as_fd(), name).map_err(io_at(rel, "remove link"))?;
                }
                if let Some(dparent) = default_parent {
                    let present = safe_fs::lstat_at(dparent.as_fd(), name)
                        .map_err(io_at(rel, "inspect"))?
                        .is_some();
                    let empty_ours = e.created
                        && safe_fs::is_empty_entry(dparent.as_fd(), name)
                            .map_err(io_at(rel, "inspect"))?;
                    if empty_ours {
                        safe_fs::remove_tree(dparent.as_fd(), name)
                            .map_err(io_at(rel, "remove"))?;
                    } else if present {
                        // Moved (or filled by the admin since): it goes back where it was.
                        let dir = self.mkdirs(parent)?;
                        safe_fs::rename_noreplace(dparent.as_fd(), name, dir.as_fd(), name)
                            .map_err(io_at(rel, "move back from .default"))?;
                    } else {
                        self.summary.warnings.push(format!(
                            "/{rel}: /{} vanished; nothing to move back",
                            default_rel(rel)
                        ));
                    }
                }
                self.remove_tmpfs_link(rel)?;
            }
            Layout::LinkChild => {
                if e.created
                    && let Ok(dparent) = self.dir(&format!("{DEFAULT_DIR}/{parent}"))
                    && safe_fs::is_empty_entry(dparent.as_fd(), name)
                        .map_err(io_at(rel, "inspect"))?
                {
                    safe_fs::remove_tree(dparent.as_fd(), name).map_err(io_at(rel, "remove"))?;
                }
            }
            Layout::Copy | Layout::CopyChild => {
                if e.layout == Layout::Copy
                    && let Ok(dparent) = self.dir(&format!("{DEFAULT_DIR}/{parent}"))
                {
                    safe_fs::remove_tree(dparent.as_fd(), name)
                        .map_err(io_at(rel, "remove the .default copy"))?;
                }
                if e.created {
                    let dir = self.dir(parent)?;
                    if safe_fs::is_empty_entry(dir.as_fd(), name).map_err(io_at(rel, "inspect"))? {
                        safe_fs::remove_tree(dir.as_fd(), name).map_err(io_at(rel, "remove"))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn remove_tmpfs_link(&mut self, rel: &str) -> Result<(), LiteimgError> {
        let trel = tmpfs_rel(rel);
        if self.is_our_link(&trel, &tmpfs_link_target(rel))? {
            let (parent, name) = safe_fs::split_rel(&trel);
            let dir = self.dir(parent)?;
            safe_fs::unlink_at(dir.as_fd(), OsStr::new(name))
                .map_err(io_at(&trel, "remove link"))?;
        }
        Ok(())
    }

    fn create_empty(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &str,
        is_dir: bool,
        rel: &str,
    ) -> Result<(), LiteimgError> {
        let r = if is_dir {
            safe_fs::create_dir(dir, OsStr::new(name), Mode::from_bits_truncate(0o755))
        } else {
            safe_fs::create_empty_file(dir, OsStr::new(name), Mode::from_bits_truncate(0o644))
        };
        r.map_err(io_at(rel, "create"))?;
        self.summary.created += 1;
        Ok(())
    }

    fn apply(
        &mut self,
        rule: &LiteRule,
        layout: Layout,
        previous: Option<&Applied>,
    ) -> Result<Applied, LiteimgError> {
        let rel = rule.path.relative();
        let (parent, name) = safe_fs::split_rel(rel);
        let mut applied = Applied {
            path: rel.to_string(),
            is_dir: rule.is_dir,
            options: rule.options.canonical().to_string(),
            layout,
            created: previous.is_some_and(|p| p.created),
        };
        match layout {
            Layout::Link | Layout::Skipped => {
                let image_link = image_link_target(rel);
                let in_place = self.is_our_link(rel, &image_link)?;
                match self.stat(rel)? {
                    Some(_) if in_place => {}
                    Some(st) if safe_fs::kind_of(&st) == Kind::Symlink => {
                        if previous.is_none_or(|p| p.layout != Layout::Skipped) {
                            self.summary.warnings.push(format!(
                                "{}: is a symlink in the image; left alone (as xCAT does for \
                                 /etc/mtab)",
                                rule.path
                            ));
                        }
                        applied.layout = Layout::Skipped;
                        if previous.is_some() {
                            self.summary.unchanged += 1;
                        }
                        return Ok(applied);
                    }
                    Some(_) => {
                        // Moved to .default (a package update replaced our link: the new
                        // file wins, the previous default is kept under .statelite).
                        let dparent = self.mkdirs(&format!("{DEFAULT_DIR}/{parent}"))?;
                        if previous.is_some() {
                            self.retire_default(rel)?;
                            applied.created = false;
                        }
                        let dir = self.dir(parent)?;
                        safe_fs::rename_noreplace(
                            dir.as_fd(),
                            OsStr::new(name),
                            dparent.as_fd(),
                            OsStr::new(name),
                        )
                        .map_err(io_at(rel, "move to .default"))?;
                    }
                    None => {
                        self.mkdirs(parent)?;
                        let dparent = self.mkdirs(&format!("{DEFAULT_DIR}/{parent}"))?;
                        let exists = safe_fs::lstat_at(dparent.as_fd(), OsStr::new(name))
                            .map_err(io_at(rel, "inspect"))?
                            .is_some();
                        if !exists {
                            self.create_empty(dparent.as_fd(), name, rule.is_dir, rel)?;
                            applied.created = true;
                        }
                    }
                }
                applied.layout = Layout::Link;
                let mut changed = !in_place;
                let trel = tmpfs_rel(rel);
                let tmpfs_target = tmpfs_link_target(rel);
                if !self.is_our_link(&trel, &tmpfs_target)? {
                    let (tparent, tname) = safe_fs::split_rel(&trel);
                    let tdir = self.mkdirs(tparent)?;
                    if safe_fs::lstat_at(tdir.as_fd(), OsStr::new(tname))
                        .map_err(io_at(&trel, "inspect"))?
                        .is_some()
                    {
                        return Err(LiteimgError::Conflict {
                            path: format!("/{trel}"),
                            problem: "exists and is not liteimg's link; move it away and rerun"
                                .into(),
                        });
                    }
                    safe_fs::symlink_at(OsStr::new(&tmpfs_target), tdir.as_fd(), OsStr::new(tname))
                        .map_err(io_at(&trel, "create link"))?;
                    changed = true;
                }
                if !in_place {
                    let dir = self.dir(parent)?;
                    safe_fs::symlink_at(OsStr::new(&image_link), dir.as_fd(), OsStr::new(name))
                        .map_err(io_at(rel, "create link"))?;
                }
                if changed {
                    self.summary.linked += 1;
                } else {
                    self.summary.unchanged += 1;
                }
            }
            Layout::LinkChild => {
                let dparent = self.mkdirs(&format!("{DEFAULT_DIR}/{parent}"))?;
                let exists = safe_fs::lstat_at(dparent.as_fd(), OsStr::new(name))
                    .map_err(io_at(rel, "inspect"))?
                    .is_some();
                if exists {
                    self.summary.unchanged += 1;
                } else {
                    self.create_empty(dparent.as_fd(), name, rule.is_dir, rel)?;
                    applied.created = true;
                }
            }
            Layout::Copy | Layout::CopyChild => {
                let exists = self.stat(rel)?.is_some();
                if !exists {
                    let dir = self.mkdirs(parent)?;
                    self.create_empty(dir.as_fd(), name, rule.is_dir, rel)?;
                    applied.created = true;
                } else if layout == Layout::CopyChild {
                    self.summary.unchanged += 1;
                }
                // Copy itself happens in execute's last pass, after all children exist.
            }
        }
        Ok(applied)
    }

    /// Moves `.default/P` out of the way into `.statelite/replaced/P` (replacing an older one
    /// there, which is ours).
    fn retire_default(&mut self, rel: &str) -> Result<(), LiteimgError> {
        let (parent, name) = safe_fs::split_rel(rel);
        let name = OsStr::new(name);
        let Ok(dparent) = self.dir(&format!("{DEFAULT_DIR}/{parent}")) else {
            return Ok(());
        };
        if safe_fs::lstat_at(dparent.as_fd(), name)
            .map_err(io_at(rel, "inspect"))?
            .is_none()
        {
            return Ok(());
        }
        let keep = self.mkdirs(&format!("{STATE_DIR}/replaced/{parent}"))?;
        safe_fs::remove_tree(keep.as_fd(), name).map_err(io_at(rel, "remove old replaced copy"))?;
        safe_fs::rename_at(dparent.as_fd(), name, keep.as_fd(), name)
            .map_err(io_at(rel, "keep the previous default"))?;
        self.summary.warnings.push(format!(
            "/{rel}: the image has a new version where liteimg's link was; it is now the \
             default, the previous default is in /{STATE_DIR}/replaced/{rel}"
        ));
        Ok(())
    }

    /// `cp -a R/P R/.default/P`, unless the copy is already identical.
    fn copy_to_default(&mut self, rel: &str) -> Result<(), LiteimgError> {
        let (parent, name) = safe_fs::split_rel(rel);
        let name = OsStr::new(name);
        let src = self.dir(parent)?;
        let dparent = Rc::new(self.mkdirs(&format!("{DEFAULT_DIR}/{parent}"))?);
        let had = safe_fs::lstat_at(dparent.as_fd(), name)
            .map_err(io_at(rel, "inspect"))?
            .is_some();
        if had
            && safe_fs::same_tree(src.as_fd(), name, dparent.as_fd(), name)
                .map_err(io_at(rel, "compare"))?
        {
            self.summary.unchanged += 1;
            return Ok(());
        }
        // Build the new copy beside the old one and swap, so a failure keeps the old copy.
        let tmp = format!(".{}.liteimg-new", name.to_string_lossy());
        let tmp = OsStr::new(&tmp);
        safe_fs::remove_tree(dparent.as_fd(), tmp).map_err(io_at(rel, "remove stale temporary"))?;
        safe_fs::copy_tree(
            src.as_fd(),
            name,
            &dparent,
            tmp,
            Existing::Refuse,
            &mut self.links,
        )
        .map_err(io_at(rel, "copy to .default"))?;
        if had {
            safe_fs::remove_tree(dparent.as_fd(), name)
                .map_err(io_at(rel, "replace the .default copy"))?;
            self.summary.refreshed += 1;
        } else {
            self.summary.copied += 1;
        }
        safe_fs::rename_at(dparent.as_fd(), tmp, dparent.as_fd(), name)
            .map_err(io_at(rel, "rename the .default copy"))
    }

    /// Removes parent directories we created that are now empty, deepest first.
    fn prune_created_dirs(&mut self) -> Result<(), LiteimgError> {
        let entries: BTreeSet<String> =
            self.record.entries.iter().map(|e| e.path.clone()).collect();
        let dirs: Vec<String> = self.record.created_dirs.iter().rev().cloned().collect();
        for rel in dirs {
            if entries.contains(&rel) {
                continue;
            }
            let (parent, name) = safe_fs::split_rel(&rel);
            let gone = match safe_fs::open_dir_beneath(self.fd(), parent) {
                Ok(dir) => {
                    safe_fs::rmdir_if_empty(dir.as_fd(), OsStr::new(name))
                        .map_err(io_at(&rel, "remove empty directory"))?
                        || safe_fs::lstat_at(dir.as_fd(), OsStr::new(name))
                            .map_err(io_at(&rel, "inspect"))?
                            .is_none()
                }
                Err(_) => true,
            };
            if gone {
                self.record.created_dirs.remove(&rel);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_follow_xcat_getreldir() {
        assert_eq!(
            image_link_target("etc/ntp.conf"),
            "../.statelite/tmpfs/etc/ntp.conf"
        );
        assert_eq!(
            tmpfs_link_target("etc/ntp.conf"),
            "../../../.default/etc/ntp.conf"
        );
        assert_eq!(image_link_target("tmp"), "./.statelite/tmpfs/tmp");
        assert_eq!(tmpfs_link_target("tmp"), "../.././.default/tmp");
        assert_eq!(
            image_link_target("var/lib/xen/ntp"),
            "../../../.statelite/tmpfs/var/lib/xen/ntp"
        );
        assert_eq!(
            tmpfs_link_target("var/lib/xen/ntp"),
            "../../../../../.default/var/lib/xen/ntp"
        );
    }

    #[test]
    fn xcat_parent_child_rules_are_enforced() {
        let rows = statelite_fs::rules::rows_from(&[
            ("", "/var/", "link"),
            ("", "/var/log/", "tmpfs"),
            ("", "/opt/", "tmpfs"),
            ("", "/opt/x", "link"),
            ("", "/srv/", "link"),
            ("", "/srv/a", "link,ro"),
            ("", "/.default/x", ""),
        ])
        .unwrap();
        let (_, problems) = layouts(&RuleSet::for_image(&rows, "img"));
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn save_file_is_xcat_format() {
        let e = Applied {
            path: "etc/ssh".into(),
            is_dir: true,
            options: "link".into(),
            layout: Layout::Link,
            created: false,
        };
        assert_eq!(save_text("img", &[e]), "img\tlink\t/etc/ssh/\n");
    }
}
