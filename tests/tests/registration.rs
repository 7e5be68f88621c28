//! End-to-end registration (protocol §5) on a bridge: one LB, three agents, the
//! real XDP program, real IGMP; with the bridge's IGMP snooping on and off.
//! Each behaviour is its own test on a topology of its own, after the same
//! start (three agents register within 2 P), so that one failure does not
//! hide the others. Prints the measured registration and removal latencies.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use lb_tests::{
    Bridge, FAST_TIMERS, Proc, StatusReport, Topology, departure_reason, first_group, registered,
    registration_latency,
};

const P: Duration = Duration::from_millis(200);
const T: Duration = Duration::from_millis(400);
const N: u32 = 3;
const R: u32 = 2;
const POLL: Duration = Duration::from_millis(20);

fn start_lb(
    topo: &Topology,
    host: usize,
    name: &str,
    more: &[&str],
) -> anyhow::Result<(Proc, std::path::PathBuf)> {
    let mut extra = FAST_TIMERS.to_vec();
    extra.extend(["--robustness", "2"]);
    extra.extend_from_slice(more);
    topo.start_lb(host, name, &extra)
}

fn start_agent(topo: &Topology, host: usize, name: &str) -> anyhow::Result<Proc> {
    topo.spawn(
        host,
        name,
        "backend-agent",
        &["--iface", "eth0", "--weight", "100"],
    )
}

/// SIGTERM to every process at once, then each must exit 0.
fn terminate<'a>(procs: impl Iterator<Item = &'a mut Proc>) -> anyhow::Result<()> {
    let procs: Vec<&mut Proc> = procs.collect();
    for p in &procs {
        p.signal(libc::SIGTERM);
    }
    for p in procs {
        ensure!(
            p.wait_exit(Duration::from_secs(5))? == 0,
            "{} did not exit 0",
            p.name
        );
    }
    Ok(())
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Counts the LB's queries on the wire at the bridge port of host `host`
/// for `window` with tcpdump: an independent witness of `queries_sent`.
fn queries_on_wire(topo: &Topology, port: &str, window: Duration) -> anyhow::Result<usize> {
    // IGMP type 0x11 at the start of the IP payload, whatever the options.
    let filter = "ip proto 2 and ip[((ip[0]&0xf)<<2)] = 0x11";
    let out = Command::new("timeout")
        .arg(format!("{}", window.as_secs_f64()))
        .args([
            "ip",
            "netns",
            "exec",
            &topo.bridge_ns,
            "tcpdump",
            "-i",
            port,
            "-n",
            "-l",
            "-Q",
            "in",
            filter,
        ])
        .output()
        .context("running tcpdump")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        stderr.contains("listening on"),
        "tcpdump did not start: {stderr}"
    );
    let seen: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("igmp"))
        .map(str::to_owned)
        .collect();
    Ok(seen.len())
}

/// A bridge with the LB on host 0 and three registered agents on hosts 1..=3
/// (hosts 4 and 5 are free for a late agent and a second LB).
struct Bed<'a> {
    topo: &'a Topology,
    mode: &'static str,
    lb: Proc,
    pin: std::path::PathBuf,
    agents: Vec<Proc>,
}

impl Bed<'_> {
    fn addr(&self, i: usize) -> String {
        self.topo.host(i).addr.to_string()
    }

    fn until(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&StatusReport) -> bool,
    ) -> anyhow::Result<Duration> {
        self.topo.until_status(&self.pin, limit, what, pred)
    }

    /// `status` lists `addr` as departed for `reason`.
    fn departed_for(&self, addr: &str, reason: &str) -> anyhow::Result<()> {
        let status = self.topo.status(&self.pin)?;
        let got = departure_reason(&status, addr);
        ensure!(
            got.as_deref() == Some(reason),
            "status gives {addr}'s departure as {got:?}, not {reason:?}"
        );
        Ok(())
    }

    fn xdp_logged(&self, text: &str) -> anyhow::Result<()> {
        lb_tests::xdp_logged(&self.lb, text)
    }
}

/// Builds the topology, starts the LB (with `lb_extra` arguments) and three
/// agents, and checks that they register within 2 P of their start (and
/// that XDP logged each).
fn with_registered(
    bridge: Bridge,
    lb_extra: &[&str],
    body: impl FnOnce(&mut Bed<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    lb_tests::with_topology(6, bridge, |topo| {
        let mode = match bridge {
            Bridge::Flooding => "snooping off",
            Bridge::Snooping => "snooping on",
            Bridge::SnoopingQuerier { .. } => "snooping with a querier",
        };
        let (lb, pin) = start_lb(topo, 0, "lb1", lb_extra)?;
        let agents: Vec<Proc> = (1..=3)
            .map(|i| start_agent(topo, i, &format!("agent{i}")))
            .collect::<anyhow::Result<_>>()?;
        let mut bed = Bed {
            topo,
            mode,
            lb,
            pin,
            agents,
        };
        let addrs: Vec<String> = (1..=3).map(|i| bed.addr(i)).collect();
        bed.until(2 * P + Duration::from_secs(2), "registration", |s| {
            addrs.iter().all(|a| registered(s).contains(a))
        })?;
        // From the LB's and the agents' own log records: polling `status`
        // one agent after the other would add its own delay.
        let mut latencies = Vec::new();
        for (agent, addr) in bed.agents.iter().zip(&addrs) {
            bed.xdp_logged(&format!("backend {addr} registered in group"))?;
            let latency = registration_latency(&bed.lb, agent, addr)
                .with_context(|| format!("no timestamps for {addr}"))?;
            latencies.push(ms(latency));
            ensure!(
                latency <= 2 * P,
                "{addr} registered after {latency:?}, more than 2 P"
            );
        }
        println!(
            "[{mode}] registration latency after the agent joined (ms, from the logs): {latencies:?}"
        );
        body(&mut bed)
    })
}

/// SIGSTOP: agent1 frozen for good is removed after its misses run out,
/// not before; agent2 frozen for 2 T and thawed is never removed.
fn frozen_agent_removed_thawed_agent_kept(bed: &mut Bed<'_>) -> anyhow::Result<()> {
    let mode = bed.mode;
    let frozen = Instant::now();
    bed.agents[0].signal(libc::SIGSTOP);
    bed.agents[1].signal(libc::SIGSTOP);
    let (a1, a2) = (bed.addr(1), bed.addr(2));
    let mut thawed = false;
    let mut a2_max_misses = 0;
    let removal_limit = T * (N + 1) + P + Duration::from_millis(300);
    let removed_after = loop {
        let s = bed.topo.status(&bed.pin)?;
        let a2_entry = first_group(&s)
            .backends
            .iter()
            .find(|b| b.address.to_string() == a2);
        let Some(a2_entry) = a2_entry else {
            bail!("thawed agent2 was removed")
        };
        a2_max_misses = a2_max_misses.max(a2_entry.misses);
        if !thawed && frozen.elapsed() >= 2 * T {
            bed.agents[1].signal(libc::SIGCONT);
            thawed = true;
        }
        if !registered(&s).contains(&a1) {
            break frozen.elapsed();
        }
        ensure!(
            frozen.elapsed() < removal_limit,
            "frozen agent1 still registered after {:?}",
            frozen.elapsed()
        );
        std::thread::sleep(POLL);
    };
    // Its last announcement was at most P (+ jitter) before the freeze.
    let earliest = T * (N + 1) - P - Duration::from_millis(100);
    println!(
        "[{mode}] frozen agent removed {} ms after SIGSTOP (bounds {}..{} ms); thawed agent's misses peaked at {a2_max_misses}",
        ms(removed_after),
        ms(earliest),
        ms(removal_limit)
    );
    ensure!(
        removed_after >= earliest,
        "agent1 removed after {removed_after:?}, before its misses ran out"
    );
    ensure!(
        a2_max_misses >= 1,
        "agent2 never missed a heartbeat: was it frozen?"
    );
    bed.departed_for(&a1, "missed heartbeats")?;
    // The thawed agent stays through one more full removal window.
    let watch = Instant::now();
    while watch.elapsed() < T * (N + 1) {
        ensure!(
            registered(&bed.topo.status(&bed.pin)?).contains(&a2),
            "thawed agent2 was removed"
        );
        std::thread::sleep(POLL);
    }
    bed.agents[0].signal(libc::SIGCONT);
    let back = bed.until(
        2 * P + Duration::from_secs(1),
        "re-registration after SIGCONT",
        |s| registered(s).contains(&a1),
    )?;
    println!(
        "[{mode}] thawed agent1 re-registered {} ms after SIGCONT",
        ms(back)
    );
    Ok(())
}

/// SIGTERM: removed within one P by its LEAVING (logged by XDP), exits 0.
fn terminated_agent_removed_within_one_period(bed: &mut Bed<'_>) -> anyhow::Result<()> {
    let a3 = bed.addr(3);
    bed.agents[2].signal(libc::SIGTERM);
    let gone = bed.until(P + Duration::from_secs(1), "removal after SIGTERM", |s| {
        !registered(s).contains(&a3)
    })?;
    println!(
        "[{}] agent3 removed {} ms after SIGTERM",
        bed.mode,
        ms(gone)
    );
    ensure!(gone <= P, "agent3 removed after {gone:?}, more than one P");
    ensure!(
        bed.agents[2].wait_exit(Duration::from_secs(5))? == 0,
        "agent3 did not exit 0"
    );
    bed.departed_for(&a3, "LEAVING announcement")?;
    bed.xdp_logged(&format!("backend {a3} removed from group"))?;
    bed.xdp_logged("LEAVING announcement")
}

/// All agents gone: the group dies and queries stop (counted by the LB and
/// on the wire); a new agent revives it and registers within 2 P.
fn group_dies_and_a_new_agent_revives_it(bed: &mut Bed<'_>) -> anyhow::Result<()> {
    let mode = bed.mode;
    let ended = Instant::now();
    terminate(bed.agents.iter_mut())?;
    bed.until(Duration::from_secs(2), "every backend removed", |s| {
        registered(s).is_empty()
    })?;
    bed.until(
        (R + 2) * P + Duration::from_secs(1),
        "group declared dead",
        |s| first_group(s).state == "dead",
    )?;
    println!(
        "[{mode}] group dead {} ms after the last agent left (R = {R}, P = {} ms)",
        ms(ended.elapsed()),
        ms(P)
    );
    let sent_at_death = first_group(&bed.topo.status(&bed.pin)?).queries_sent;
    let on_wire = queries_on_wire(bed.topo, "p1", 5 * P)?;
    let sent_later = first_group(&bed.topo.status(&bed.pin)?).queries_sent;
    println!(
        "[{mode}] while dead for 5 P: {} queries counted by the LB, {on_wire} seen on the wire",
        sent_later - sent_at_death
    );
    ensure!(
        sent_later == sent_at_death && on_wire == 0,
        "queries went on while the group was dead"
    );

    let _agent4 = start_agent(bed.topo, 4, "agent4")?;
    let a4 = bed.addr(4);
    let reg = bed.until(
        2 * P + Duration::from_secs(2),
        "registration after revival",
        |s| registered(s).contains(&a4) && first_group(s).state == "alive",
    )?;
    println!(
        "[{mode}] new agent revived the group and registered {} ms after start",
        ms(reg)
    );
    ensure!(
        reg <= 2 * P,
        "revival registration took {reg:?}, more than 2 P"
    );
    let revived_on_wire = queries_on_wire(bed.topo, "p1", 5 * P)?;
    ensure!(
        revived_on_wire >= 3,
        "only {revived_on_wire} queries on the wire in 5 P after revival"
    );
    Ok(())
}

/// A second LB on the same bridge registers the same backends; on a clean
/// shutdown the agents leave both LBs, and the LBs exit 0 and unpin.
fn second_lb_registers_the_same_backends(bed: &mut Bed<'_>) -> anyhow::Result<()> {
    let want = {
        let mut v = vec![bed.addr(1), bed.addr(2), bed.addr(3)];
        v.sort();
        v
    };
    let lb2_start = Instant::now();
    let (mut lb2, pin2) = start_lb(bed.topo, 5, "lb2", &[])?;
    let both = bed.topo.until_status(
        &pin2,
        2 * P + Duration::from_secs(2),
        "lb2 registers the same backends",
        |s| registered(s) == want,
    )?;
    println!(
        "[{}] second LB registered all three backends {} ms after its status came up ({} ms after start)",
        bed.mode,
        ms(both),
        ms(lb2_start.elapsed())
    );
    ensure!(both <= 2 * P, "second LB took {both:?}");
    ensure!(
        registered(&bed.topo.status(&bed.pin)?) == want,
        "lb1 lost backends when lb2 started"
    );

    terminate(bed.agents.iter_mut())?;
    bed.topo.until_status(
        &pin2,
        P + Duration::from_secs(1),
        "lb2 empty after LEAVING",
        |s| registered(s).is_empty(),
    )?;
    for (proc_, pin) in [(&mut bed.lb, &bed.pin), (&mut lb2, &pin2)] {
        proc_.signal(libc::SIGTERM);
        ensure!(
            proc_.wait_exit(Duration::from_secs(5))? == 0,
            "{} did not exit 0",
            proc_.name
        );
        ensure!(!pin.exists(), "{} left its pins behind", proc_.name);
    }
    Ok(())
}

/// SIGKILL: the agent sends nothing, but with the default IGMPv3-layout
/// query its host stays in IGMPv3 mode and reports leaving the group the
/// moment the socket closes; XDP removes the backend on that leave, within
/// one P (protocol §4.1).
fn killed_agent_removed_by_its_hosts_leave(bed: &mut Bed<'_>) -> anyhow::Result<()> {
    let a1 = bed.addr(1);
    bed.agents[0].signal(libc::SIGKILL);
    let gone = bed.until(P + Duration::from_secs(2), "removal after SIGKILL", |s| {
        !registered(s).contains(&a1)
    })?;
    println!(
        "[{}, IGMPv3 query] agent1 removed {} ms after SIGKILL",
        bed.mode,
        ms(gone)
    );
    ensure!(gone <= P, "agent1 removed after {gone:?}, more than one P");
    bed.departed_for(&a1, "IGMP leave")?;
    bed.xdp_logged(&format!("backend {a1} removed from group"))?;
    bed.xdp_logged("IGMP leave")
}

/// The same with `--query-version 2`: hosts fall back to IGMPv2, which
/// sends a leave only if the host was the last to report for the group, so
/// a killed agent is usually removed by its missed heartbeats, within
/// (N + 1) T + P. Prints which signal removed it.
fn killed_agent_with_v2_queries(bed: &mut Bed<'_>) -> anyhow::Result<()> {
    let a1 = bed.addr(1);
    bed.agents[0].signal(libc::SIGKILL);
    let limit = T * (N + 1) + P + Duration::from_millis(300);
    let gone = bed.until(limit, "removal after SIGKILL", |s| {
        !registered(s).contains(&a1)
    })?;
    let by_leave = bed.lb.log_text().lines().any(|l| {
        l.contains("lb_ebpf")
            && l.contains(&format!("backend {a1} removed"))
            && l.contains("IGMP leave")
    });
    println!(
        "[{}, IGMPv2 query] agent1 removed {} ms after SIGKILL, by {}",
        bed.mode,
        ms(gone),
        if by_leave {
            "its host's leave (it was the last reporter)"
        } else {
            "missed heartbeats"
        }
    );
    Ok(())
}

#[test]
fn killed_agent_with_v2_queries_is_removed_by_leave_or_misses() {
    with_registered(
        Bridge::Snooping,
        &["--query-version", "2"],
        killed_agent_with_v2_queries,
    )
    .unwrap();
}

/// The bridge's own querier, as data-centre switches run one: general
/// queries every 2 s, reports forwarded only to its router ports.
const QUERIER: Bridge = Bridge::SnoopingQuerier {
    query_interval_cs: 200,
};

/// Behind a snooping bridge with its own querier the LB keeps seeing
/// reports, because its router advertisements make its port a router
/// port: over 12 s (several of the bridge's query intervals) the group
/// never dies and no backend is removed.
fn group_stays_alive_behind_a_querier(bed: &mut Bed<'_>) -> anyhow::Result<()> {
    let want = {
        let mut v = vec![bed.addr(1), bed.addr(2), bed.addr(3)];
        v.sort();
        v
    };
    let watch = Instant::now();
    let mut polls = 0;
    while watch.elapsed() < Duration::from_secs(12) {
        let s = bed.topo.status(&bed.pin)?;
        ensure!(
            first_group(&s).state == "alive",
            "group declared dead after {:?}",
            watch.elapsed()
        );
        ensure!(
            registered(&s) == want,
            "backends lost after {:?}: {:?}",
            watch.elapsed(),
            registered(&s)
        );
        polls += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let reports = first_group(&bed.topo.status(&bed.pin)?).reports;
    println!(
        "[{}] group alive and all three backends kept for 12 s ({polls} polls), {reports} reports seen",
        bed.mode
    );
    ensure!(
        !bed.lb
            .log_text()
            .contains("no membership report reaches the LB"),
        "the LB saw announcements without reports"
    );
    Ok(())
}

#[test]
fn group_stays_alive_behind_a_querier_bridge() {
    with_registered(QUERIER, &[], group_stays_alive_behind_a_querier).unwrap();
}

/// One test per behaviour and bridge.
macro_rules! registration_tests {
    ($($behaviour:ident),* $(,)?) => {
        registration_tests!(@bridge snooping_on, Bridge::Snooping, $($behaviour),*);
        registration_tests!(@bridge snooping_off, Bridge::Flooding, $($behaviour),*);
        registration_tests!(@bridge snooping_with_querier, QUERIER, $($behaviour),*);
    };
    (@bridge $module:ident, $bridge:expr, $($behaviour:ident),*) => {
        mod $module {
            use super::*;
            $(
                #[test]
                fn $behaviour() {
                    with_registered($bridge, &[], super::$behaviour).unwrap();
                }
            )*
        }
    };
}

registration_tests!(
    killed_agent_removed_by_its_hosts_leave,
    frozen_agent_removed_thawed_agent_kept,
    terminated_agent_removed_within_one_period,
    group_dies_and_a_new_agent_revives_it,
    second_lb_registers_the_same_backends,
);
