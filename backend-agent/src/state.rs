//! The agent's own state, for `backend-agent --status`: the LBs it knows,
//! its service state and its last transitions, kept in a file under
//! /run/xdp-lb that the running agent rewrites on every change.
use std::{
    collections::{BTreeMap, VecDeque},
    fmt::Write as _,
    fs, io,
    net::IpAddr,
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// Transitions kept.
const KEPT_TRANSITIONS: usize = 10;

/// One change of the service state, as logged.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Transition {
    /// Unix time in milliseconds.
    pub unix_ms: u64,
    /// `up` or `down`.
    pub state: String,
    /// The checks' output.
    pub detail: String,
}

/// What `--status` shows.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentStatus {
    pub pid: u32,
    pub iface: String,
    pub address: Option<IpAddr>,
    pub group: Option<IpAddr>,
    /// Every LB that queried this agent.
    pub lbs: Vec<IpAddr>,
    pub draining: bool,
    /// `up`, `down`, or `unchecked` without `--check`.
    pub service: String,
    pub checks: Vec<String>,
    /// Oldest first.
    pub transitions: VecDeque<Transition>,
    /// Counters of the IPIP decapsulation program, with `--vip` (as of
    /// the last query).
    #[serde(default)]
    pub decap: BTreeMap<String, u64>,
}

impl AgentStatus {
    /// Records a transition, keeping the last few.
    pub fn transition(&mut self, state: &str, detail: &str) {
        if self.transitions.len() == KEPT_TRANSITIONS {
            self.transitions.pop_front();
        }
        self.transitions.push_back(Transition {
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            state: state.to_owned(),
            detail: detail.to_owned(),
        });
        self.service = state.to_owned();
    }

    /// A table for people.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let addr = self.address.map_or("-".to_owned(), |a| a.to_string());
        let group = self.group.map_or("-".to_owned(), |g| g.to_string());
        let _ = writeln!(
            out,
            "agent pid {} on {} ({addr}), group {group}",
            self.pid, self.iface
        );
        let lbs: Vec<String> = self.lbs.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "load balancers: {}",
            if lbs.is_empty() {
                "none has queried yet".to_owned()
            } else {
                lbs.join(", ")
            }
        );
        let _ = writeln!(
            out,
            "service: {}{}",
            self.service,
            if self.draining { " (draining)" } else { "" }
        );
        if !self.checks.is_empty() {
            let _ = writeln!(out, "checks: {}", self.checks.join(", "));
        }
        if !self.decap.is_empty() {
            let counters: Vec<String> =
                self.decap.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(out, "IPIP decapsulation: {}", counters.join(" "));
        }
        for t in &self.transitions {
            let at = UNIX_EPOCH + Duration::from_millis(t.unix_ms);
            let _ = writeln!(
                out,
                "  {} {}: {}",
                humantime::format_rfc3339_millis(at),
                t.state,
                t.detail
            );
        }
        out
    }
}

/// Where the agent on `iface` in this network namespace keeps its state:
/// two namespaces may each have an `eth0`.
pub fn path(iface: &str) -> io::Result<PathBuf> {
    Ok(PathBuf::from("/run/xdp-lb").join(format!("{}.json", instance_name(iface)?)))
}

/// The name of the agent on `iface` in this network namespace.
pub fn instance_name(iface: &str) -> io::Result<String> {
    let netns = fs::read_link("/proc/self/ns/net")?;
    let netns: String = netns
        .to_string_lossy()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    Ok(format!("agent-{netns}-{iface}"))
}

/// Replaces the state file at once (write, then rename).
pub fn write(status: &AgentStatus) -> io::Result<()> {
    let path = path(&status.iface)?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(status).map_err(io::Error::other)?;
    fs::write(&tmp, text)?;
    fs::rename(&tmp, &path)
}

/// The state of the agent running on `iface`, if one is.
pub fn read(iface: &str) -> Result<AgentStatus, String> {
    let path = path(iface).map_err(|e| format!("reading this network namespace: {e}"))?;
    let text = fs::read_to_string(&path).map_err(|_| {
        format!(
            "no agent is running on {iface} in this network namespace (no {})",
            path.display()
        )
    })?;
    let status: AgentStatus =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: kill with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(status.pid as libc::pid_t, 0) } == 0;
    if !alive {
        return Err(format!(
            "the agent on {iface} (pid {}) is not running; {} is left from it",
            status.pid,
            path.display()
        ));
    }
    Ok(status)
}

/// Removes the state file when the agent exits.
pub fn remove(iface: &str) {
    if let Ok(path) = path(iface) {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_transitions_and_the_current_state() {
        let mut status = AgentStatus::default();
        for i in 0..15 {
            status.transition(
                if i % 2 == 0 { "up" } else { "down" },
                &format!("round {i}"),
            );
        }
        assert_eq!(status.transitions.len(), KEPT_TRANSITIONS);
        assert_eq!(status.transitions[0].detail, "round 5");
        assert_eq!(status.service, "up");
        let text = status.render_text();
        assert!(text.contains("service: up"), "{text}");
        assert!(text.contains("round 14"), "{text}");
    }
}
