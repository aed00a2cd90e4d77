//! Build information for `oxfcgi --version` (what a bug report needs): the git revision, the
//! Rust compiler and the pyo3 version, as compile-time environment variables.

use std::process::Command;

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let rev =
        output("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown (not a git checkout)".into());
    let dirty = output("git", &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = output(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    // The locked pyo3 version (Cargo.lock ships in the sdist too).
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let pyo3 = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"pyo3\"\n"))
        .and_then(|p| {
            p.lines().find_map(|l| l.strip_prefix("version = \"")).map(|v| v.trim_end_matches('"').to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=OXFCGI_GIT_REV={rev}{}", if dirty { " (modified)" } else { "" });
    println!("cargo:rustc-env=OXFCGI_RUSTC={rustc_version}");
    println!("cargo:rustc-env=OXFCGI_PYO3={pyo3}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    println!("cargo:rerun-if-changed=Cargo.lock");
}
