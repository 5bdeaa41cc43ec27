//! Names the commit the binary is built from (`rentedhost-operator --version`): the git
//! commit of the checkout, with `-dirty` when files differ from it; `unknown` outside git
//! (or the value of RENTEDHOST_COMMIT, for builds from a source archive).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=RENTEDHOST_COMMIT");
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        for watched in ["HEAD", "index", "refs"] {
            println!("cargo:rerun-if-changed={dir}/{watched}");
        }
    }
    let commit = std::env::var("RENTEDHOST_COMMIT").ok().or_else(|| {
        let id = git(&["rev-parse", "--short=12", "HEAD"])?;
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|changes| !changes.is_empty());
        Some(if dirty { format!("{id}-dirty") } else { id })
    });
    let commit = commit.unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=RENTEDHOST_COMMIT={commit}");
}
