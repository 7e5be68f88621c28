//! Builds the XDP object. One implementation for `lb-user`'s build script
//! (so `cargo build`/`cargo test` never embed a stale object) and for
//! `cargo xtask build-ebpf`.
use std::{
    fmt, fs,
    path::{Path, PathBuf},
    process::Command,
};

/// Why the eBPF object could not be built.
#[derive(Debug)]
pub enum BuildError {
    Toolchain { path: PathBuf, reason: String },
    Spawn { program: String, reason: String },
    Failed { subcommand: String, status: String },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Toolchain { path, reason } => {
                write!(
                    f,
                    "cannot read the eBPF toolchain from {}: {reason}",
                    path.display()
                )
            }
            BuildError::Spawn { program, reason } => write!(
                f,
                "cannot run {program}: {reason}; run `./xtask.sh setup` to install the toolchain"
            ),
            BuildError::Failed { subcommand, status } => write!(
                f,
                "cargo {subcommand} of lb-ebpf failed ({status}); if bpf-linker or the nightly is missing, run `./xtask.sh setup`"
            ),
        }
    }
}

impl std::error::Error for BuildError {}

/// Directory of the lb-ebpf crate, beside this one.
pub fn ebpf_crate_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../lb-ebpf")
}

/// Files whose change must rebuild the object.
pub fn ebpf_inputs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    [
        "lb-ebpf/src",
        "lb-ebpf/Cargo.toml",
        "lb-ebpf/rust-toolchain.toml",
        "lb-common/src",
        "lb-common/Cargo.toml",
    ]
    .iter()
    .map(|p| root.join(p))
    .collect()
}

/// The channel pinned in lb-ebpf/rust-toolchain.toml.
pub fn ebpf_toolchain() -> Result<String, BuildError> {
    let path = ebpf_crate_dir().join("rust-toolchain.toml");
    let text = fs::read_to_string(&path).map_err(|e| BuildError::Toolchain {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.split('"').nth(1))
        .next()
        .map(str::to_owned)
        .ok_or(BuildError::Toolchain {
            path,
            reason: "no `channel = \"...\"` line".into(),
        })
}

/// The objects the eBPF crate builds.
pub struct Objects {
    /// The LB's XDP program (lb-user embeds it).
    pub lb: PathBuf,
    /// The agent's decapsulation program (backend-agent embeds it).
    pub decap: PathBuf,
}

/// Builds both objects with BTF into `target_dir` and returns their paths.
pub fn build(target_dir: &Path) -> Result<Objects, BuildError> {
    // BTF makes `bpftool map dump` show field names.
    run_cargo(
        "build",
        target_dir,
        "-Cdebuginfo=2\x1f-Clink-arg=--btf\x1f-Dwarnings",
    )?;
    let release = target_dir.join("bpfel-unknown-none/release");
    Ok(Objects {
        lb: release.join("lb-ebpf"),
        decap: release.join("agent-decap"),
    })
}

/// Which of the built objects a build script wants.
pub type ObjectPick = fn(&Objects) -> &PathBuf;

/// For a build script: builds the objects into the shared eBPF target
/// directory (one for all userspace profiles: the objects do not depend
/// on them, and a nightly build-std takes a while), asks cargo to run it
/// again when an input changes, and copies each object of `objects` (the
/// one its function picks) into `OUT_DIR` under its name. Exits with
/// cargo's error format on failure.
pub fn build_for_build_script(objects: &[(ObjectPick, &str)]) {
    for input in ebpf_inputs() {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ebpf");
    let built = match build(&target_dir) {
        Ok(built) => built,
        Err(e) => {
            println!("cargo::error={e}");
            std::process::exit(1);
        }
    };
    for (pick, name) in objects {
        fs::copy(pick(&built), out_dir.join(name)).expect("copy the eBPF object into OUT_DIR");
    }
}

/// Runs clippy on the eBPF crate for its BPF target, warnings as errors.
pub fn clippy(target_dir: &Path) -> Result<(), BuildError> {
    run_cargo("clippy", target_dir, "-Dwarnings")
}

/// `cargo <subcommand>` of the eBPF crate with its nightly, for
/// bpfel-unknown-none, with `rustflags` (`\x1f`-separated).
fn run_cargo(subcommand: &str, target_dir: &Path, rustflags: &str) -> Result<(), BuildError> {
    let toolchain = ebpf_toolchain()?;
    let mut cmd = Command::new("rustup");
    cmd.current_dir(ebpf_crate_dir())
        .args(["run", &toolchain, "cargo", subcommand, "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(target_dir);
    // A build script inherits the userspace build's toolchain and flags;
    // none of them apply to the eBPF target.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let inherited = (key.starts_with("CARGO") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || matches!(
                key.as_ref(),
                "RUSTUP_TOOLCHAIN" | "RUSTFLAGS" | "RUSTDOCFLAGS"
            );
        if inherited {
            cmd.env_remove(key.as_ref());
        }
    }
    // Warnings fail the build: the eBPF crate is held to the same bar.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    let status = cmd.status().map_err(|e| BuildError::Spawn {
        program: "rustup".into(),
        reason: e.to_string(),
    })?;
    if !status.success() {
        return Err(BuildError::Failed {
            subcommand: subcommand.to_owned(),
            status: status.to_string(),
        });
    }
    Ok(())
}
