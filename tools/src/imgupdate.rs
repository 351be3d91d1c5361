//! `statelite imgupdate`: announce a changed image to the running nodes.
//!
//! After the admin changes files in an image (rpm --root, an editor), the nodes' kernels
//! still cache the old entries and pages. Bumping the image generation
//! (`<rootimg>/.statelite/generation`, a decimal number) tells every node daemon, which
//! checks it cheaply every few seconds, to invalidate those caches so read-only paths
//! change live without a reboot.

use std::path::Path;

use statelite_fs::layers::GENERATION_FILE;
use statelite_fs::tabfile::write_file_atomic;

use crate::liteimg::{LiteimgArgs, resolve_image};

/// Reads the current generation (0 when the image has none yet).
pub fn read_generation(root: &Path) -> Result<u64, String> {
    let file = root.join(GENERATION_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => text.trim().parse::<u64>().map_err(|_| {
            format!(
                "{}: expected a generation number, found {:?}",
                file.display(),
                text.trim()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(format!("cannot read {}: {e}", file.display())),
    }
}

/// Bumps the generation of the image rooted at `root`; returns the new one.
pub fn bump_generation(root: &Path) -> Result<u64, String> {
    if !root.is_dir() {
        return Err(format!("{} is not an image root directory", root.display()));
    }
    let next = read_generation(root)?
        .checked_add(1)
        .ok_or("generation counter overflow")?;
    let file = root.join(GENERATION_FILE);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    write_file_atomic(&file, format!("{next}\n").as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(next)
}

/// `statelite imgupdate IMAGE` (same image selection as liteimg).
pub fn run_cli(args: &LiteimgArgs, tables: &Path) -> Result<(), String> {
    let (image, root) = resolve_image(args, tables)?;
    let generation = bump_generation(&root)?;
    println!(
        "{image}: generation {generation} ({}); nodes pick it up within their check interval",
        root.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bumps_from_nothing_and_refuses_garbage() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_generation(d.path()).unwrap(), 0);
        assert_eq!(bump_generation(d.path()).unwrap(), 1);
        assert_eq!(bump_generation(d.path()).unwrap(), 2);
        assert_eq!(
            std::fs::read_to_string(d.path().join(GENERATION_FILE)).unwrap(),
            "2\n"
        );
        std::fs::write(d.path().join(GENERATION_FILE), "two\n").unwrap();
        let e = bump_generation(d.path()).unwrap_err();
        assert!(e.contains("expected a generation number"), "{e}");
        assert_eq!(
            std::fs::read_to_string(d.path().join(GENERATION_FILE)).unwrap(),
            "two\n"
        );
        assert!(bump_generation(&d.path().join("missing")).is_err());
    }
}
