//! The project's binaries and the processes tests start from them.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    time::Duration,
};

use anyhow::{Context, bail};

use crate::wait_for;

/// Directory holding the project's binaries: `XDP_LB_BIN_DIR` (absolute,
/// or relative to the workspace root), or the
/// profile directory of the running test executable.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDP_LB_BIN_DIR") {
        // Relative to the workspace root, wherever the test runs from.
        return Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build --bins`, or run `./xtask.sh test`)",
        path.display()
    );
    path
}

/// Runs a command to completion, failing with its stderr if it fails.
pub fn sh(program: &str, args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// CPU time (user + system) a process has used, from /proc.
pub fn cpu_time(pid: i32) -> anyhow::Result<Duration> {
    lb_host::system::cpu_time(&pid.to_string()).with_context(|| format!("reading /proc/{pid}/stat"))
}

/// A process started by a test; killed on drop if still running.
pub struct Proc {
    pub name: String,
    pub(crate) child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory preconditions; the pid is our child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits (bounded) for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<i32> {
        let status = wait_for(limit, Duration::from_millis(10), || {
            self.child.try_wait().ok().flatten()
        })
        .with_context(|| format!("{} did not exit within {limit:?}", self.name))?;
        Ok(status.code().unwrap_or(-1))
    }

    /// Whether the process has exited (without waiting).
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
