//! `cargo xtask setup`: installs what a fresh machine lacks, idempotently.
//! Every check is cheap, so a second run finishes in seconds.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

/// Debian packages the project needs, with a command each provides.
const PACKAGES: [(&str, &str); 11] = [
    ("bpftool", "bpftool"),
    ("iproute2", "ip"),
    ("nftables", "nft"),
    ("tcpdump", "tcpdump"),
    ("smcroute", "smcrouted"),
    ("ethtool", "ethtool"),
    ("bird2", "bird"),
    ("curl", "curl"),
    ("man-db", "man"),
    ("prometheus", "promtool"),
    ("chromium", "chromium"),
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPFFS: &str = "/sys/fs/bpf";

fn have(command: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `cmd` to completion, failing with its stderr if it fails; its stdout.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs the Debian packages of `packages` (package, command it
/// provides) whose command is missing.
pub fn apt_packages(packages: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, cmd)| !have(cmd))
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        let names: Vec<&str> = packages.iter().map(|p| p.0).collect();
        println!("ok: {} present", names.join(", "));
        return Ok(());
    }
    println!("installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))?;
    Ok(())
}

fn nightly_sysroot(toolchain: &str) -> anyhow::Result<PathBuf> {
    let out = run(Command::new("rustc").args([&format!("+{toolchain}"), "--print", "sysroot"]))?;
    Ok(PathBuf::from(out.trim()))
}

fn ebpf_toolchain(toolchain: &str) -> anyhow::Result<PathBuf> {
    let listed = run(Command::new("rustup").args(["toolchain", "list"]))?;
    let installed = listed.lines().any(|l| l.starts_with(toolchain));
    if installed {
        let sysroot = nightly_sysroot(toolchain)?;
        let has_clippy = sysroot.join("bin/cargo-clippy").exists();
        if sysroot.join("lib/rustlib/src/rust/library/core").exists() && has_clippy {
            println!("ok: toolchain {toolchain} with rust-src and clippy present");
            return Ok(sysroot);
        }
    }
    // With no toolchain named, rustup installs what the crate's
    // rust-toolchain.toml names, components included.
    println!("installing toolchain {toolchain} with rust-src and clippy");
    run(Command::new("rustup")
        .current_dir(ebpf_build::ebpf_crate_dir())
        // Set by the rustup proxy that started this xtask: it would win.
        .env_remove("RUSTUP_TOOLCHAIN")
        .args(["toolchain", "install"]))?;
    nightly_sysroot(toolchain)
}

fn cargo_bin(name: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        });
    home.join("bin").join(name)
}

/// bpf-linker must load the same LLVM as the nightly's rustc: it is built
/// against the libLLVM that ships inside that toolchain.
fn bpf_linker(sysroot: &Path) -> anyhow::Result<()> {
    let libllvm = fs::read_dir(sysroot.join("lib"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .context("the eBPF toolchain ships no libLLVM.so.*")?;
    let linker = cargo_bin("bpf-linker");
    if linker.exists() {
        let version = run(Command::new(&linker).arg("--version")).unwrap_or_default();
        let libs = run(Command::new("ldd").arg(&linker)).unwrap_or_default();
        let linked = libs
            .lines()
            .any(|l| l.contains(&libllvm) && !l.contains("not found"));
        if version.contains(BPF_LINKER_VERSION) && linked {
            println!("ok: bpf-linker {BPF_LINKER_VERSION} linked to {libllvm}");
            return Ok(());
        }
    }
    // The prefix must stay: bpf-linker keeps an rpath to it.
    let prefix = PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
        .join(".local/share/xdp-lb/llvm");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib)?;
    for name in ["libLLVM.so", libllvm.as_str()] {
        let link = lib.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(sysroot.join("lib").join(&libllvm), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    println!("building bpf-linker {BPF_LINKER_VERSION} against {libllvm} (about a minute)");
    let status = Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--force",
        ])
        .env("LLVM_PREFIX", &prefix)
        .status()
        .context("running cargo install bpf-linker")?;
    if !status.success() {
        bail!("cargo install bpf-linker failed ({status})");
    }
    Ok(())
}

fn bpffs() -> anyhow::Result<()> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if mounts.lines().any(|l| {
        l.split_whitespace().nth(1) == Some(BPFFS) && l.split_whitespace().nth(2) == Some("bpf")
    }) {
        println!("ok: bpffs mounted at {BPFFS}");
        return Ok(());
    }
    println!("mounting bpffs at {BPFFS}");
    fs::create_dir_all(BPFFS)?;
    run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
    Ok(())
}

pub fn setup() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("setup installs packages and mounts bpffs: run it as root");
    }
    apt_packages(&PACKAGES)?;
    let toolchain = ebpf_build::ebpf_toolchain()?;
    let sysroot = ebpf_toolchain(&toolchain)?;
    bpf_linker(&sysroot)?;
    bpffs()
}
