//! The LB under test: starting it, reading its status, and what tests
//! look up in a status report.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::{Counter, GroupReport, Proc, StatusReport, Topology, bin, sh, wait_for};

impl Topology {
    /// The status of the instance at `pin_path` once it has configured its
    /// groups (its maps are pinned, and answer, a moment before).
    pub fn configured_status(&self, pin_path: &Path) -> Option<StatusReport> {
        self.status(pin_path).ok().filter(|s| !s.groups.is_empty())
    }

    /// Pin path of an LB instance named `name`.
    pub fn pin_path(&self, name: &str) -> PathBuf {
        self.bpffs.join(name)
    }

    /// `lb-user status --json` of the instance pinned at `pin_path`, read
    /// into the type that printed it.
    pub fn status(&self, pin_path: &Path) -> anyhow::Result<StatusReport> {
        let out = sh(
            bin("lb-user").to_str().context("path")?,
            &[
                "status",
                "--json",
                "--pin-path",
                pin_path.to_str().context("path")?,
            ],
        )?;
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Waits until every service of the instance at `pin_path` has a table
    /// naming exactly the active backends of its group: the control pass
    /// after a registration, a leave or a change of state has rebuilt it.
    /// Returns how long that took.
    pub fn wait_tables(&self, pin_path: &Path) -> anyhow::Result<Duration> {
        self.wait_tables_without(pin_path, &[])
    }

    /// The same, for tables that never name the active backends
    /// `unreachable` (routed ones, with `--forwarding l2`).
    pub fn wait_tables_without(
        &self,
        pin_path: &Path,
        unreachable: &[Ipv4Addr],
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
            self.status(pin_path)
                .ok()
                .filter(|s| tables_name_the_active_backends(s, unreachable))
        })
        .with_context(|| {
            format!(
                "the tables at {} did not come to name the active backends: {:?}",
                pin_path.display(),
                self.status(pin_path).map(|s| s.services)
            )
        })?;
        Ok(start.elapsed())
    }
}

/// Whether every service's table names exactly its group's active
/// backends but `unreachable` (and there is a service).
pub fn tables_name_the_active_backends(status: &StatusReport, unreachable: &[Ipv4Addr]) -> bool {
    let active = |group: std::net::IpAddr| {
        let mut addrs: Vec<std::net::IpAddr> = status
            .groups
            .iter()
            .filter(|g| g.group == group)
            .flat_map(|g| &g.backends)
            .filter(|b| b.state == "active")
            .map(|b| b.address)
            .filter(|addr| {
                !unreachable
                    .iter()
                    .any(|u| std::net::IpAddr::V4(*u) == *addr)
            })
            .collect();
        addrs.sort();
        addrs
    };
    !status.services.is_empty()
        && status
            .services
            .iter()
            .all(|s| s.table_backends == active(s.group))
}

impl Topology {
    /// `count` short connections from host `client` to `target`
    /// (`ADDR:PORT`, an IPv6 address in brackets; `http-probe spread`):
    /// the connections each backend name answered, and the errors.
    pub fn spread(
        &self,
        client: usize,
        target: &str,
        count: u32,
    ) -> anyhow::Result<(std::collections::BTreeMap<String, u64>, u64)> {
        let out = self.exec(
            client,
            "http-probe",
            &["spread", target, &count.to_string()],
        )?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let names = v["names"]
            .as_object()
            .context("names")?
            .iter()
            .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
            .collect();
        Ok((names, v["errors"].as_u64().context("errors")?))
    }
}

/// The backend a `http-probe hold` answered from first (its `first NAME`
/// line), once it has.
pub fn first_answer(hold: &Proc) -> anyhow::Result<String> {
    wait_for(Duration::from_secs(3), Duration::from_millis(20), || {
        hold.log_text()
            .lines()
            .find_map(|l| l.strip_prefix("first ").map(str::to_owned))
    })
    .with_context(|| format!("{}: no answer: {}", hold.name, hold.log_text()))
}

/// The fast protocol timers the tests run with: P = 200 ms, max response
/// 100 ms, T = 400 ms, N = 3.
pub const FAST_TIMERS: [&str; 8] = [
    "--query-interval",
    "200ms",
    "--max-response-time",
    "100ms",
    "--timeout",
    "400ms",
    "--max-misses",
    "3",
];

/// The timers of a keyed LB's tests: P = 600 ms ([`KEYED_P`]), max
/// response 300 ms, T = 1.2 s, N = 3. A held leave's confirmation takes
/// its arrival, a control tick, a 200 ms window for the answer and a tick:
/// about 0.27 s here, and up to 0.44 s in a loaded CI run, inside P.
pub const KEYED_TIMERS: [&str; 8] = [
    "--query-interval",
    "600ms",
    "--max-response-time",
    "300ms",
    "--timeout",
    "1200ms",
    "--max-misses",
    "3",
];

/// The query interval of [`KEYED_TIMERS`].
pub const KEYED_P: Duration = Duration::from_millis(600);

/// Waits (2 s at most) until the log of `lb` has a record of XDP's log
/// ring containing `text`.
pub fn xdp_logged(lb: &Proc, text: &str) -> anyhow::Result<()> {
    wait_for(Duration::from_secs(2), Duration::from_millis(20), || {
        lb.log_text()
            .lines()
            .any(|l| l.contains("lb_ebpf") && l.contains(text))
            .then_some(())
    })
    .with_context(|| format!("no XDP log record {text:?} in the LB's log"))
}

/// The time of day (s) of the first line of `process`'s log containing
/// `text`, from its timestamp (`...THH:MM:SS.ffffffZ`).
fn first_log_seconds(process: &Proc, text: &str) -> Option<f64> {
    let log = process.log_text();
    let line = log.lines().find(|l| l.contains(text))?;
    let time = line.split_once('T')?.1.split_once('Z')?.0;
    let mut fields = time.split(':').map(str::parse::<f64>);
    let (h, m, s) = (
        fields.next()?.ok()?,
        fields.next()?.ok()?,
        fields.next()?.ok()?,
    );
    Some(h * 3600.0 + m * 60.0 + s)
}

/// How long after `agent` joined its group the LB (`lb`) registered the
/// backend at `addr`, from both processes' own log timestamps: polling
/// `status` would add its own delay. `None` until both records are there.
pub fn registration_latency(lb: &Proc, agent: &Proc, addr: &str) -> Option<Duration> {
    let registered = first_log_seconds(lb, &format!("backend {addr} registered in group"))?;
    let joined = first_log_seconds(agent, "agent is a member of the group")?;
    Some(Duration::from_secs_f64((registered - joined).max(0.0)))
}

impl Topology {
    /// Waits (at most `limit`, polling every 20 ms) until `pred` holds on
    /// the status of the instance at `pin_path`; returns the time it took.
    pub fn until_status(
        &self,
        pin_path: &Path,
        limit: Duration,
        what: &str,
        pred: impl Fn(&StatusReport) -> bool,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        wait_for(limit, Duration::from_millis(20), || {
            self.status(pin_path).ok().filter(|s| pred(s))
        })
        .with_context(|| format!("{what}: not within {limit:?}"))?;
        Ok(start.elapsed())
    }

    /// Starts `lb-user run --iface eth0` with `extra` arguments on host `i`,
    /// its maps pinned under this topology's bpffs as `name`; returns once
    /// its status answers.
    pub fn start_lb(
        &self,
        i: usize,
        name: &str,
        extra: &[&str],
    ) -> anyhow::Result<(Proc, PathBuf)> {
        let pin = self.pin_path(name);
        let pin_str = pin.to_str().context("pin path")?.to_owned();
        let mut args = vec!["run", "--iface", "eth0", "--pin-path", &pin_str];
        args.extend_from_slice(extra);
        let lb = self.spawn(i, name, "lb-user", &args)?;
        wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
            self.configured_status(&pin)
        })
        .with_context(|| format!("{name} did not come up: {}", lb.log_text()))?;
        Ok((lb, pin))
    }
}

impl Topology {
    /// Sends host `client`'s traffic for `vip` to host `lb`'s eth0: a
    /// permanent neighbour entry, as a router's ECMP next hop would (two
    /// LBs holding one VIP on a segment both answer ARP for it).
    pub fn send_vip_through(&self, client: usize, vip: &str, lb: usize) -> anyhow::Result<()> {
        let out = self.exec_program(lb, "cat", &["/sys/class/net/eth0/address"])?;
        let lladdr = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let args = [
            "neigh",
            "replace",
            vip,
            "lladdr",
            &lladdr,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ];
        let out = self.exec_program(client, "ip", &args)?;
        anyhow::ensure!(
            out.status.success(),
            "ip neigh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

/// The first group of a status report (a report without one is an error
/// of the LB, not a group without backends).
pub fn first_group(status: &StatusReport) -> &GroupReport {
    status
        .groups
        .first()
        .expect("status lists the configured group")
}

/// Addresses registered in the first group, sorted.
pub fn registered(status: &StatusReport) -> Vec<String> {
    let mut addrs: Vec<String> = first_group(status)
        .backends
        .iter()
        .map(|b| b.address.to_string())
        .collect();
    addrs.sort();
    addrs
}

/// Why `addr` left the first group, if status lists it as departed.
pub fn departure_reason(status: &StatusReport, addr: &str) -> Option<String> {
    first_group(status)
        .departed
        .iter()
        .find(|d| d.address.to_string() == addr)
        .map(|d| d.reason.clone())
}

/// The value of `counter` in a status report; an error if the report has
/// no such counter (renamed or removed), never a silent zero.
pub fn counter(status: &StatusReport, counter: Counter) -> anyhow::Result<u64> {
    Ok(status.counter(counter)?)
}

/// Checks that XDP handed the client's GSO super-packets to the GSO
/// program (some) and that it wrapped each of them; prints both counts
/// under `case`.
pub fn check_super_packets_wrapped(status: &StatusReport, case: &str) -> anyhow::Result<()> {
    let handed_over = counter(status, Counter::IpipGsoHandoff)?;
    let wrapped = status.gso_counter(crate::GsoCounter::Wrapped)?;
    println!("{case}: {handed_over} super-packets handed to the GSO program, {wrapped} wrapped");
    anyhow::ensure!(
        handed_over > 0 && wrapped == handed_over,
        "{case}: the client's super-packets did not go through the GSO program: {:?}",
        status.gso_counters
    );
    Ok(())
}

impl Topology {
    /// Waits (at most `limit`) until the first group of the instance at
    /// `pin_path` has `count` backends in `state` ("active", "draining",
    /// "down").
    pub fn wait_backends(
        &self,
        pin_path: &Path,
        state: &str,
        count: usize,
        limit: Duration,
    ) -> anyhow::Result<()> {
        wait_for(limit, Duration::from_millis(20), || {
            // A starting LB's status has no group yet: not reached.
            let status = self.status(pin_path).ok()?;
            let n = status
                .groups
                .first()?
                .backends
                .iter()
                .filter(|b| b.state == state)
                .count();
            (n == count).then_some(())
        })
        .with_context(|| {
            format!(
                "{count} backends {state} not reached at {}",
                pin_path.display()
            )
        })
    }
}

/// The agent's flags for one service check, run every 200 ms and taking
/// two rounds to rise or fall.
pub fn check_args(check: &str) -> Vec<String> {
    [
        "--check",
        check,
        "--check-interval",
        "200ms",
        "--rise",
        "2",
        "--fall",
        "2",
    ]
    .map(str::to_owned)
    .to_vec()
}
