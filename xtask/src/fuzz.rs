//! `cargo xtask fuzz [TARGET] [--seconds N]`: runs the cargo-fuzz targets of
//! the userspace parsers (all of them, one after the other, by default),
//! installing cargo-fuzz first if it is missing.
use std::process::Command;

use anyhow::{Context, bail};

use crate::root;

/// The targets in fuzz/fuzz_targets.
pub const TARGETS: [&str; 4] = ["igmp", "announcement", "key_file", "config"];

pub fn fuzz(target: Option<&str>, seconds: u32) -> anyhow::Result<()> {
    let toolchain = ebpf_build::ebpf_toolchain()?;
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        println!("installing cargo-fuzz");
        let status = Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked"])
            .status()
            .context("running cargo install cargo-fuzz")?;
        if !status.success() {
            bail!("cargo install cargo-fuzz failed ({status})");
        }
    }
    let targets: Vec<&str> = match target {
        Some(t) if TARGETS.contains(&t) => vec![t],
        Some(t) => bail!(
            "no fuzz target {t:?}; the targets are {}",
            TARGETS.join(", ")
        ),
        None => TARGETS.to_vec(),
    };
    for target in targets {
        println!("+ cargo +{toolchain} fuzz run {target} -- -max_total_time={seconds}");
        // libFuzzer needs a nightly: the eBPF crate's pinned one.
        let status = Command::new("cargo")
            .current_dir(root())
            .arg(format!("+{toolchain}"))
            .args([
                "fuzz",
                "run",
                target,
                "--",
                &format!("-max_total_time={seconds}"),
            ])
            .status()
            .context("running cargo fuzz")?;
        if !status.success() {
            bail!(
                "fuzz target {target} failed ({status}); the crashing input is under fuzz/artifacts/{target}"
            );
        }
    }
    Ok(())
}
