//! IPv6 registration end to end (protocol §9) on a bridge: the LB's MLD
//! query carrying its IPv6 address, agents joining over MLD and
//! announcing over UDPv6, removal by LEAVING, by the MLDv2 leave of a
//! killed agent's host and by missed heartbeats; an LB serving an IPv4
//! and an IPv6 group side by side. Prints the measured latencies.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use lb_common::Counter;
use lb_tests::{
    Bridge, FAST_TIMERS, KEYED_P, KEYED_TIMERS, Proc, StatusReport, Topology, check_args,
    fd_store::FdStore, registration_latency, wait_for, with_topology,
};

const P: Duration = Duration::from_millis(200);
const T: Duration = Duration::from_millis(400);
const N: u32 = 3;
const POLL: Duration = Duration::from_millis(20);
const GROUP6: &str = "ff15::4c42";
const LB: usize = 0;

/// The backends `status` lists in the group `group`, as text.
fn members(status: &StatusReport, group: &str) -> Vec<String> {
    status
        .groups
        .iter()
        .filter(|g| g.group.to_string() == group)
        .flat_map(|g| g.backends.iter().map(|b| b.address.to_string()))
        .collect()
}

/// Why `addr` left `group`, if `status` lists it as departed.
fn departure(status: &StatusReport, group: &str, addr: &str) -> Option<String> {
    status
        .groups
        .iter()
        .filter(|g| g.group.to_string() == group)
        .flat_map(|g| &g.departed)
        .find(|d| d.address.to_string() == addr)
        .map(|d| d.reason.clone())
}

/// An LB on host 0 serving `groups`, its hosts given IPv6 first.
struct Bed<'a> {
    topo: &'a Topology,
    lb: Proc,
    pin: PathBuf,
}

impl<'a> Bed<'a> {
    fn start(topo: &'a Topology, hosts: usize, groups: &[&str]) -> anyhow::Result<Self> {
        for i in 0..hosts {
            topo.ipv6(i)?;
        }
        let mut args = FAST_TIMERS.to_vec();
        for g in groups {
            args.extend(["--group", g]);
        }
        let (lb, pin) = topo.start_lb(LB, "lb6", &args)?;
        Ok(Self { topo, lb, pin })
    }

    /// Waits until `pred` holds on the LB's status; the time it took.
    fn until(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&StatusReport) -> bool,
    ) -> anyhow::Result<Duration> {
        self.topo
            .until_status(&self.pin, limit, what, pred)
            .with_context(|| format!("the LB's log: {}", self.lb.log_text()))
    }

    fn agent(&self, host: usize, group: &str) -> anyhow::Result<Proc> {
        self.agent_with(host, &["--group", group])
    }

    fn agent_with(&self, host: usize, args: &[&str]) -> anyhow::Result<Proc> {
        let mut all = vec!["--iface", "eth0"];
        all.extend_from_slice(args);
        self.topo
            .spawn(host, &format!("agent{host}"), "backend-agent", &all)
    }

    fn xdp_logged(&self, text: &str) -> anyhow::Result<()> {
        lb_tests::xdp_logged(&self.lb, text)
    }

    fn departed_for(&self, group: &str, addr: &str, reason: &str) -> anyhow::Result<()> {
        let got = departure(&self.topo.status(&self.pin)?, group, addr);
        ensure!(
            got.as_deref() == Some(reason),
            "status gives {addr}'s departure as {got:?}, not {reason:?}"
        );
        Ok(())
    }
}

/// Starts agents of `GROUP6` on hosts 1..=3 and checks that they register
/// within 2 P; returns them with their addresses.
fn three_registered(bed: &Bed<'_>) -> anyhow::Result<Vec<(Proc, String)>> {
    let agents: Vec<(Proc, String)> = (1..=3)
        .map(|i| {
            let agent = bed.agent_with(i, &["--group", GROUP6, "--metrics", AGENT_METRICS])?;
            Ok((agent, bed.topo.ipv6_address(i).to_string()))
        })
        .collect::<anyhow::Result<_>>()?;
    bed.until(2 * P + Duration::from_secs(2), "IPv6 registration", |s| {
        let m = members(s, GROUP6);
        agents.iter().all(|(_, addr)| m.contains(addr))
    })?;
    // From the processes' own records: polling `status` adds its delay.
    let mut latencies = Vec::new();
    for (agent, addr) in &agents {
        bed.xdp_logged(&format!("backend {addr} registered in group {GROUP6}"))?;
        let latency = registration_latency(&bed.lb, agent, addr)
            .with_context(|| format!("no timestamps for {addr}"))?;
        latencies.push(latency.as_millis());
        ensure!(
            latency <= 2 * P,
            "{addr} registered after {latency:?}, more than 2 P"
        );
    }
    println!("IPv6 registration latency after the agent joined (ms, from the logs): {latencies:?}");
    Ok(agents)
}

/// The agents' metrics endpoint, in each agent's namespace.
const AGENT_METRICS: &str = "127.0.0.1:9901";

/// The value of the sample `name` (with its labels, as exposed) in the
/// `/metrics` of the agent on `host`, 0 if it is not there.
fn agent_metric(topo: &Topology, host: usize, name: &str) -> anyhow::Result<f64> {
    let url = format!("http://{AGENT_METRICS}/metrics");
    let out = topo.exec_program(host, "curl", &["-sf", &url])?;
    let text = String::from_utf8(out.stdout)?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0))
}

fn ipv6_backends_register_and_leave(bridge: Bridge) -> anyhow::Result<()> {
    with_topology(4, bridge, |topo| {
        let bed = Bed::start(topo, 4, &[GROUP6])?;
        let mut agents = three_registered(&bed)?;
        let status = topo.status(&bed.pin)?;
        let group = &status.groups[0];
        ensure!(
            group.state == "alive" && group.reports > 0,
            "no MLD report counted: {group:?}"
        );

        // Suppression: three members answer each query with one MLDv1
        // report between them, mostly.
        std::thread::sleep(5 * P);
        let (mut sent, mut suppressed) = (0.0, 0.0);
        for host in 1..=3 {
            sent += agent_metric(topo, host, "xdp_lb_agent_reports_sent_total{kind=\"mld\"}")?;
            suppressed += agent_metric(topo, host, "xdp_lb_agent_reports_suppressed_total")?;
        }
        println!("MLD reports of three agents: {sent} sent, {suppressed} suppressed");
        ensure!(suppressed > 0.0, "no report was suppressed ({sent} sent)");
        if bridge != Bridge::Flooding {
            // The LB sends no IGMP here: its MLD router advertisements
            // alone make its port (p1) a router port of the bridge.
            let mdb = std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &topo.bridge_ns,
                    "bridge",
                    "-j",
                    "-d",
                    "mdb",
                    "show",
                ])
                .output()
                .context("running bridge mdb show")?;
            let mdb: serde_json::Value = serde_json::from_slice(&mdb.stdout)?;
            let routers = &mdb[0]["router"]["br0"];
            println!("bridge router ports: {routers}");
            let ports = routers.as_array().map(Vec::as_slice).unwrap_or_default();
            ensure!(
                ports.iter().any(|p| p["port"] == "p1"),
                "the LB's port is no router port: {mdb}"
            );
        }

        // SIGTERM: LEAVING over UDPv6, within one P.
        let (agent3, a3) = &mut agents[2];
        agent3.signal(libc::SIGTERM);
        let gone = bed.until(P + Duration::from_secs(1), "removal after SIGTERM", |s| {
            !members(s, GROUP6).contains(a3)
        })?;
        println!("IPv6 agent removed {} ms after SIGTERM", gone.as_millis());
        ensure!(gone <= P, "removed after {gone:?}, more than one P");
        ensure!(
            agent3.wait_exit(Duration::from_secs(5))? == 0,
            "agent3 did not exit 0"
        );
        bed.departed_for(GROUP6, a3, "LEAVING announcement")?;

        // SIGKILL: no LEAVING; the host's MLDv2 leave (from its link-local
        // address) names the backend by its MAC, within one P.
        let (agent2, a2) = &mut agents[1];
        agent2.signal(libc::SIGKILL);
        let gone = bed.until(P + Duration::from_secs(1), "removal after SIGKILL", |s| {
            !members(s, GROUP6).contains(a2)
        })?;
        println!(
            "IPv6 agent removed {} ms after SIGKILL (MLD leave)",
            gone.as_millis()
        );
        ensure!(gone <= P, "removed after {gone:?}, more than one P");
        bed.departed_for(GROUP6, a2, "MLD leave")?;
        bed.xdp_logged(&format!("backend {a2} removed from group {GROUP6}"))?;
        Ok(())
    })
}

#[test]
fn ipv6_backends_register_and_leave_snooping_off() -> anyhow::Result<()> {
    ipv6_backends_register_and_leave(Bridge::Flooding)
}

/// Behind a bridge that snoops MLD: the LB's router advertisements make
/// its port a router port, so the reports and leaves reach it.
#[test]
fn ipv6_backends_register_and_leave_snooping_on() -> anyhow::Result<()> {
    ipv6_backends_register_and_leave(Bridge::Snooping)
}

/// Behind a snooping bridge that runs its own MLD querier, as data-centre
/// switches do.
#[test]
fn ipv6_backends_register_and_leave_snooping_with_a_querier() -> anyhow::Result<()> {
    ipv6_backends_register_and_leave(Bridge::SnoopingQuerier {
        query_interval_cs: 100,
    })
}

/// SIGSTOP: a frozen agent is removed after its misses run out, not before.
#[test]
fn frozen_ipv6_agent_removed_after_its_misses() -> anyhow::Result<()> {
    with_topology(4, Bridge::Flooding, |topo| {
        let bed = Bed::start(topo, 4, &[GROUP6])?;
        let mut agents = three_registered(&bed)?;
        let (agent1, a1) = &mut agents[0];
        let frozen = Instant::now();
        agent1.signal(libc::SIGSTOP);
        let limit = T * (N + 1) + P + Duration::from_millis(300);
        bed.until(
            limit + Duration::from_secs(1),
            "removal of a frozen agent",
            |s| !members(s, GROUP6).contains(a1),
        )?;
        let after = frozen.elapsed();
        let earliest = T * (N + 1) - P - Duration::from_millis(100);
        println!(
            "frozen IPv6 agent removed {} ms after SIGSTOP (bounds {}..{} ms)",
            after.as_millis(),
            earliest.as_millis(),
            limit.as_millis()
        );
        ensure!(
            after >= earliest && after <= limit,
            "removed after {after:?}"
        );
        bed.departed_for(GROUP6, a1, "missed heartbeats")?;
        agent1.signal(libc::SIGCONT);
        Ok(())
    })
}

/// The MLDv1 layout of the query (`--query-version 2`, 24 bytes) registers
/// IPv6 backends too.
#[test]
fn the_mldv1_query_layout_registers_too() -> anyhow::Result<()> {
    with_topology(2, Bridge::Flooding, |topo| {
        for i in 0..2 {
            topo.ipv6(i)?;
        }
        let mut args = FAST_TIMERS.to_vec();
        args.extend(["--group", GROUP6, "--query-version", "2"]);
        let (lb, pin) = topo.start_lb(LB, "lb6", &args)?;
        let bed = Bed { topo, lb, pin };
        let a1 = topo.ipv6_address(1).to_string();
        let _agent = bed.agent(1, GROUP6)?;
        let took = bed.until(2 * P + Duration::from_secs(2), "registration", |s| {
            members(s, GROUP6).contains(&a1)
        })?;
        println!(
            "MLDv1 query layout: registered {} ms after the agent's start",
            took.as_millis()
        );
        ensure!(took <= 2 * P, "registered after {took:?}, more than 2 P");
        Ok(())
    })
}

/// One LB, an IPv4 and an IPv6 group side by side, each with its own port
/// and backends of its family.
#[test]
fn a_dual_stack_lb_serves_a_group_of_each_family() -> anyhow::Result<()> {
    with_topology(3, Bridge::Flooding, |topo| {
        let group6 = format!("[{GROUP6}]:2001");
        let bed = Bed::start(topo, 3, &["239.192.0.1", &group6])?;
        let v4 = topo.host(1).addr.to_string();
        let v6 = topo.ipv6_address(2).to_string();
        let _agent4 = bed.agent(1, "239.192.0.1")?;
        let _agent6 = bed.agent_with(2, &["--group", GROUP6, "--port", "2001"])?;
        let took = bed.until(2 * P + Duration::from_secs(2), "both registered", |s| {
            members(s, "239.192.0.1") == [v4.clone()] && members(s, GROUP6) == [v6.clone()]
        })?;
        println!(
            "dual stack: both backends registered {} ms after their start",
            took.as_millis()
        );
        ensure!(took <= 2 * P, "registered after {took:?}, more than 2 P");
        let json = topo.exec(
            LB,
            "lb-user",
            &["status", "--json", "--pin-path", pin(&bed.pin)?],
        )?;
        let text = String::from_utf8_lossy(&json.stdout);
        ensure!(
            text.contains(&format!("\"{v6}\"")),
            "status --json lacks {v6}: {text}"
        );
        Ok(())
    })
}

fn pin(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("pin path")
}

/// With a key: an agent without it is refused; a Done sent from a live
/// backend's own host (which the LB cannot authenticate) is held,
/// confirmed by a query and refuted by the backend's announcement; a
/// killed agent's MLD leave is confirmed and removes it within one P.
#[test]
fn keyed_ipv6_leaves_are_confirmed() -> anyhow::Result<()> {
    with_topology(4, Bridge::Flooding, |topo| {
        let key = topo.logs.join("ipv6.key");
        std::fs::write(&key, "0f1e2d3c4b5a69788796a5b4c3d2e1f0\n")?;
        let key = key.to_str().context("key path")?;
        for i in 0..4 {
            topo.ipv6(i)?;
        }
        // A held leave waits for its confirmation query's window besides.
        let mut args = KEYED_TIMERS.to_vec();
        args.extend(["--group", GROUP6, "--key-file", key]);
        let (lb, pin) = topo.start_lb(LB, "lb6", &args)?;
        let bed = Bed { topo, lb, pin };
        let keyed = ["--group", GROUP6, "--key-file", key];
        let _live = bed.agent_with(1, &keyed)?;
        let victim = bed.agent_with(2, &keyed)?;
        let _keyless = bed.agent(3, GROUP6)?;
        let (a1, a2, a3) = (
            topo.ipv6_address(1).to_string(),
            topo.ipv6_address(2).to_string(),
            topo.ipv6_address(3).to_string(),
        );
        bed.until(
            2 * KEYED_P + Duration::from_secs(2),
            "keyed registration",
            |s| {
                let m = members(s, GROUP6);
                m.contains(&a1) && m.contains(&a2)
            },
        )?;
        std::thread::sleep(2 * KEYED_P);
        let status = topo.status(&bed.pin)?;
        let refused =
            status.counter(Counter::AuthMissing)? + status.counter(Counter::AuthBadTag)?;
        ensure!(
            !members(&status, GROUP6).contains(&a3),
            "the agent without the key registered"
        );
        ensure!(refused > 0, "no untagged IPv6 announcement counted");

        let done = topo.exec(1, "mld-probe", &["done", "eth0", GROUP6])?;
        ensure!(done.status.success(), "mld-probe done failed");
        wait_for(Duration::from_secs(2), POLL, || {
            bed.lb
                .log_text()
                .contains("MLD leave not confirmed")
                .then_some(())
        })
        .context("the Done was not refuted by the live backend")?;
        ensure!(
            members(&topo.status(&bed.pin)?, GROUP6).contains(&a1),
            "the live backend was removed"
        );

        victim.signal(libc::SIGKILL);
        let killed = Instant::now();
        let status = wait_for(Duration::from_secs(3), POLL, || {
            topo.status(&bed.pin)
                .ok()
                .filter(|s| !members(s, GROUP6).contains(&a2))
        })
        .context("the killed keyed agent was not removed")?;
        // The LB's own departure record, not the polling's delay.
        let left_ms_ago = status.groups[0]
            .departed
            .iter()
            .find(|d| d.address.to_string() == a2)
            .map_or(0, |d| d.left_ms_ago);
        let gone = killed
            .elapsed()
            .saturating_sub(Duration::from_millis(left_ms_ago));
        println!(
            "keyed IPv6 agent removed {} ms after SIGKILL (confirmed MLD leave)",
            gone.as_millis()
        );
        ensure!(gone <= KEYED_P, "removed after {gone:?}, more than one P");
        bed.departed_for(GROUP6, &a2, "MLD leave confirmed")
    })
}

/// Figure 4 for IPv6: backends on two subnets behind a router that
/// replicates the group's UDP with the hop limit lowered (MLD stays on
/// each link): the LB's routed query (version 2, `--ttl 4`) reaches them,
/// their announcements are routed back, and their routed reports keep the
/// group alive though no MLD report reaches the LB.
#[test]
fn ipv6_backends_behind_a_router_register_through_routed_queries() -> anyhow::Result<()> {
    const ROUTER: usize = 1;
    let mut topo = Topology::new(2, Bridge::Flooding)?;
    let b1 = topo.add_subnet(ROUTER, 1, 1)?[0];
    let b2 = topo.add_subnet(ROUTER, 2, 1)?[0];
    topo.run(|topo| {
        topo.ipv6(LB)?;
        topo.ipv6(ROUTER)?;
        let a1 = topo.ipv6_subnet(ROUTER, 1, &[b1])?[0].to_string();
        let a2 = topo.ipv6_subnet(ROUTER, 2, &[b2])?[0].to_string();
        topo.route6_through(ROUTER, &[LB])?;
        let group: std::net::Ipv6Addr = GROUP6.parse()?;
        let _router = topo.start_mrouter(ROUTER, group, &["eth0", "s1", "s2"])?;
        let mut args = FAST_TIMERS.to_vec();
        args.extend(["--group", GROUP6, "--ttl", "4"]);
        let (lb, pin) = topo.start_lb(LB, "lb6", &args)?;
        let bed = Bed { topo, lb, pin };
        let started = Instant::now();
        let agent1 = bed.agent(b1, GROUP6)?;
        let _agent2 = bed.agent(b2, GROUP6)?;
        bed.until(
            2 * P + Duration::from_secs(2),
            "registration through the router",
            |s| {
                let m = members(s, GROUP6);
                m.contains(&a1) && m.contains(&a2)
            },
        )?;
        let took = started.elapsed();
        println!(
            "IPv6 backends behind a router registered {} ms after their start",
            took.as_millis()
        );
        ensure!(took <= 2 * P, "registered after {took:?}, more than 2 P");
        // Several periods on: alive on routed reports alone.
        std::thread::sleep(4 * P);
        let status = topo.status(&bed.pin)?;
        let routed = status.counter(Counter::RoutedReport)?;
        let mld = status.counter(Counter::MldReport)?;
        println!(
            "after 4 P: {routed} routed reports, {mld} MLD reports at the LB; group {}",
            status.groups[0].state
        );
        ensure!(
            routed > 0 && status.groups[0].state == "alive",
            "the group lives on routed reports: {status:?}"
        );
        agent1.signal(libc::SIGTERM);
        let gone = bed.until(P + Duration::from_secs(1), "removal after SIGTERM", |s| {
            !members(s, GROUP6).contains(&a1)
        })?;
        println!(
            "IPv6 backend behind a router removed {} ms after SIGTERM",
            gone.as_millis()
        );
        ensure!(gone <= P, "removed after {gone:?}, more than one P");
        Ok(())
    })
}

/// Restarts that keep state, with IPv6 backends: an agent exits on
/// SIGQUIT handing its MLD and routed sockets to the service manager's
/// store and the next one adopts them (the LB sees no leave and no new
/// registration); the LB exits on SIGQUIT and the next `run` adopts the
/// IPv6 server list with its aging state.
#[test]
fn ipv6_restarts_keep_state() -> anyhow::Result<()> {
    with_topology(2, Bridge::Flooding, |topo| {
        let bed = Bed::start(topo, 2, &[GROUP6])?;
        let a1 = topo.ipv6_address(1).to_string();
        let mut store = FdStore::bind(&topo.logs.join("notify1"))?;
        let args = ["--iface", "eth0", "--group", GROUP6];
        let mut agent = topo.spawn_managed(1, "agent1", "backend-agent", &args, &mut store)?;
        bed.until(2 * P + Duration::from_secs(2), "registration", |s| {
            members(s, GROUP6).contains(&a1)
        })?;
        let before = topo.status(&bed.pin)?;
        let registrations = before.counter(Counter::AnnounceRegistered)?;
        let leaves = before.groups[0].leaves;

        agent.signal(libc::SIGQUIT);
        ensure!(
            agent.wait_exit(Duration::from_secs(5))? == 0,
            "SIGQUIT: not a clean exit"
        );
        let held = store.names()?;
        ensure!(
            held == ["igmp", "routed"],
            "the store holds {held:?}: {}",
            agent.log_text()
        );
        let agent =
            topo.spawn_managed(1, "agent1-restarted", "backend-agent", &args, &mut store)?;
        wait_for(Duration::from_secs(5), POLL, || {
            agent
                .log_text()
                .contains("adopted the predecessor")
                .then_some(())
        })
        .with_context(|| format!("no adoption: {}", agent.log_text()))?;
        std::thread::sleep(3 * P);
        let after = topo.status(&bed.pin)?;
        println!(
            "IPv6 agent restart: registrations {registrations} -> {}, leaves {leaves} -> {}",
            after.counter(Counter::AnnounceRegistered)?,
            after.groups[0].leaves
        );
        ensure!(
            members(&after, GROUP6).contains(&a1),
            "the backend was lost"
        );
        ensure!(after.groups[0].leaves == leaves, "the LB saw a leave");
        ensure!(
            after.counter(Counter::AnnounceRegistered)? == registrations,
            "the backend registered again"
        );

        let Bed { mut lb, pin, .. } = bed;
        lb.signal(libc::SIGQUIT);
        ensure!(
            lb.wait_exit(Duration::from_secs(5))? == 0,
            "SIGQUIT: not a clean exit"
        );
        let pin_str = pin.to_str().context("pin")?;
        let mut again = vec![
            "run",
            "--iface",
            "eth0",
            "--pin-path",
            pin_str,
            "--group",
            GROUP6,
        ];
        again.extend(FAST_TIMERS);
        let restarted = topo.spawn(LB, "lb6-restarted", "lb-user", &again)?;
        wait_for(Duration::from_secs(10), POLL, || {
            restarted
                .log_text()
                .contains("kept the registered backends of the earlier instance")
                .then_some(())
        })
        .with_context(|| format!("no adoption: {}", restarted.log_text()))?;
        std::thread::sleep(3 * P);
        let adopted = topo.status(&pin)?;
        ensure!(
            members(&adopted, GROUP6).contains(&a1),
            "the adopted list lost the backend"
        );
        ensure!(
            adopted.counter(Counter::AnnounceRegistered)? == registrations,
            "the backend registered again after the LB's restart"
        );
        println!("IPv6 LB restart: the backend kept, registrations still {registrations}");
        Ok(())
    })
}

/// Service checks over IPv6: an agent whose check fails registers DOWN
/// (listed, no traffic), and comes UP once its server answers; SIGUSR1
/// announces DRAINING.
#[test]
fn ipv6_backends_carry_their_service_state() -> anyhow::Result<()> {
    with_topology(2, Bridge::Flooding, |topo| {
        let bed = Bed::start(topo, 2, &[GROUP6])?;
        let a1 = topo.ipv6_address(1).to_string();
        let mut args = vec!["--group".to_owned(), GROUP6.to_owned()];
        args.extend(check_args("tcp:80"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let agent = bed.agent_with(1, &args)?;
        let state = |want: &'static str| {
            let a1 = a1.clone();
            move |s: &StatusReport| {
                s.groups
                    .iter()
                    .flat_map(|g| &g.backends)
                    .any(|b| b.address.to_string() == a1 && b.state == want)
            }
        };
        bed.until(
            2 * P + Duration::from_secs(2),
            "registered DOWN",
            state("down"),
        )?;
        let _server = topo.start_servers(&[1])?;
        let up = bed.until(
            Duration::from_secs(3),
            "UP once the check passes",
            state("active"),
        )?;
        agent.signal(libc::SIGUSR1);
        let drained = bed.until(Duration::from_secs(1), "DRAINING", state("draining"))?;
        println!(
            "IPv6 backend: DOWN while its check failed, active {} ms after its server started, draining {} ms after SIGUSR1",
            up.as_millis(),
            drained.as_millis()
        );
        Ok(())
    })
}
