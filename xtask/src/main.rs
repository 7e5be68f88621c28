//! Developer commands: `cargo xtask setup | build-ebpf | run | test | demo |
//! bench | fuzz | package`.
mod bench;
mod demo;
mod fuzz;
mod package;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, run, test and demo the XDP load balancer")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: Debian tools, the eBPF nightly, bpf-linker, bpffs.
    Setup,
    /// Build the XDP object with BTF and print its path.
    BuildEbpf,
    /// Build lb-user (release) and run it with the given arguments.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run every check and test (what CI runs).
    Test,
    /// Set up, then show backends registering, serving and leaving in namespaces.
    Demo,
    /// XDP per-path costs and end-to-end comparison with HAProxy, nftables and direct.
    Bench {
        /// Only this part (all by default).
        part: Option<bench::Part>,
    },
    /// Debian packages of lb-user and backend-agent, with systemd units,
    /// settings files, man pages and completions (in target/package).
    Package,
    /// Fuzz the userspace parsers with cargo-fuzz (all targets by default).
    Fuzz {
        /// One of: igmp, announcement, key_file, config.
        target: Option<String>,
        /// How long each target runs.
        #[arg(long, default_value_t = 30)]
        seconds: u32,
    },
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs `cargo` with `args` in the workspace, failing if it fails.
fn cargo(args: &[&str], envs: &[(&str, &Path)]) -> anyhow::Result<()> {
    println!("+ cargo {}", args.join(" "));
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root()).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let status = cmd.status().context("running cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn test() -> anyhow::Result<()> {
    setup::setup()?;
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    // The eBPF and fuzz crates are outside the workspace; rustfmt follows
    // the modules of each file it is given.
    let outside = [
        "lb-ebpf/src/main.rs",
        "lb-ebpf/src/lib.rs",
        "lb-ebpf/src/bin/agent-decap.rs",
        "fuzz/fuzz_targets/igmp.rs",
        "fuzz/fuzz_targets/announcement.rs",
        "fuzz/fuzz_targets/key_file.rs",
        "fuzz/fuzz_targets/config.rs",
    ];
    let status = Command::new("rustfmt")
        .args(["--check", "--edition", "2024"])
        .args(outside.map(|f| root().join(f)))
        .status()
        .context("running rustfmt")?;
    if !status.success() {
        bail!(
            "not formatted: run `rustfmt --edition 2024 {}`",
            outside.join(" ")
        );
    }
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    println!("+ clippy of lb-ebpf for bpfel-unknown-none");
    ebpf_build::clippy(&root().join("target/ebpf"))?;
    cargo(&["build", "--workspace", "--bins"], &[])?;
    let bins = root().join("target/debug");
    // Unit tests and BPF_PROG_TEST_RUN packet tests.
    let mut passed = cargo_test(&["--workspace", "--exclude", "lb-tests"], &[])?;
    // Network-namespace tests, one at a time, with their measurements shown.
    passed += cargo_test(
        &["-p", "lb-tests", "--", "--nocapture", "--test-threads=1"],
        &[("XDP_LB_BIN_DIR", &bins)],
    )?;
    // The packages: contents, and units that systemd accepts.
    package::check()?;
    println!("xtask: {passed} passed, 0 failed");
    Ok(())
}

/// `cargo test ARGS` of libraries, binaries and test targets, echoing its
/// output; returns the number of tests that passed (cargo fails the command
/// if any failed). Benches run in `cargo xtask bench` only (clippy builds
/// them): a measurement is no test, and some need what a kernel may refuse.
fn cargo_test(args: &[&str], envs: &[(&str, &Path)]) -> anyhow::Result<u64> {
    let mut full = vec!["test", "--lib", "--bins", "--tests"];
    full.extend_from_slice(args);
    println!("+ cargo {}", full.join(" "));
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root())
        .args(&full)
        .stdout(std::process::Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().context("running cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let mut passed = 0;
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ok. ") {
            passed += rest
                .split_once(' ')
                .and_then(|(n, _)| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", full.join(" "));
    }
    Ok(passed)
}

fn run(args: &[String]) -> anyhow::Result<()> {
    cargo(&["build", "--release", "-p", "lb-user"], &[])?;
    let status = Command::new(root().join("target/release/lb-user"))
        .args(args)
        .status()
        .context("running lb-user")?;
    if !status.success() {
        bail!("lb-user exited with {status}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Setup => setup::setup(),
        Task::BuildEbpf => ebpf_build::build(&root().join("target/ebpf"))
            .map(|objects| {
                println!("{}", objects.lb.display());
                println!("{}", objects.decap.display());
            })
            .map_err(Into::into),
        Task::Run { args } => run(&args),
        Task::Test => test(),
        Task::Demo => demo::demo(),
        Task::Bench { part } => bench::bench(part),
        Task::Package => package::package().map(drop),
        Task::Fuzz { target, seconds } => fuzz::fuzz(target.as_deref(), seconds),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
