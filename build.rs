//! Puts the git commit into `sizeup --version` (`0.1.0 (1a2b3c4)`) for release-profile builds
//! from a git checkout. Everything else gets the plain version, and nothing here can fail the
//! build: a crates.io package has no `.git`, and a machine may have no git at all.
//!
//! Why only release profiles: the commit must be re-read whenever HEAD moves, and a changed
//! value recompiles the crate. In dev and test builds that would mean a full rebuild after every
//! `git commit`, for a string nobody reads there.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Packagers building without `.git` can still name the commit.
    println!("cargo:rerun-if-env-changed=SIZEUP_GIT_COMMIT");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let commit = std::env::var("SIZEUP_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| release.then(git_commit).flatten());
    let full = match commit {
        Some(c) => format!("{version} ({})", c.trim()),
        None => version,
    };
    println!("cargo:rustc-env=SIZEUP_VERSION={full}");
}

/// `git rev-parse --short HEAD`, only when this crate is the top of its own checkout (not a
/// package unpacked inside someone else's repository), and registers the files whose change
/// means a new commit.
fn git_commit() -> Option<String> {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let top = git(&dir, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let commit = git(&dir, &["rev-parse", "--short", "HEAD"])?;
    // HEAD names the branch; the branch's ref (or packed-refs) names the commit. In a worktree
    // these live in different folders, which `--git-path` resolves. Cargo reruns on every build
    // for a path that does not exist, so only existing paths are watched.
    let path = |name: &str| git(&dir, &["rev-parse", "--git-path", name]).map(|p| dir.join(p));
    let mut watched: Vec<PathBuf> = [path("HEAD"), path("packed-refs")].into_iter().flatten().collect();
    if let Some(branch) = git(&dir, &["symbolic-ref", "-q", "HEAD"]).and_then(|b| path(&b)) {
        // A branch packed by `git gc` has no file until its next commit creates one; its
        // folder (refs/heads/...) sees that creation.
        match branch.parent() {
            Some(folder) if !branch.exists() => watched.push(folder.to_path_buf()),
            _ => watched.push(branch),
        }
    }
    for p in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    Some(commit)
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(dir).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}
