//! Stamps the binary with the commit it was built from, for
//! `opsdeck --version`: `git rev-parse --short=12 HEAD` (with `-dirty` when
//! the work tree has changes), or `unknown` outside a git checkout (a
//! source tarball) or without git.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]);
    println!(
        "cargo:rustc-env=OPSDECK_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
    // Rebuild when HEAD moves: a checkout changes HEAD, a commit the branch
    // it names (`--git-path` finds both in a worktree too).
    // N.B.: only files that exist: cargo reruns a build script every time
    // for a missing one, which would rebuild the server on every build.
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watch.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watch {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name])
            .filter(|p| std::path::Path::new(p).exists())
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    // N.B.: checkouts share one build cache (the Makefile's
    // CARGO_TARGET_DIR), and cargo keeps one run of this script for all of
    // them: built in another checkout, the stamp was that one's commit and
    // the watched files that one's, so the binary kept the wrong commit.
    // The Makefile names the checkout, and a new name runs this again.
    println!("cargo:rerun-if-env-changed=OPSDECK_CHECKOUT");
}
