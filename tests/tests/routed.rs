//! Beyond one segment (protocol §4.4, §7): backends behind multicast routers
//! (the kernel's, driven by smcroute, or nftables' replication where the
//! kernel has no multicast routing: docs/testing.md) register through the routed
//! query and report, and serve a VIP through IPIP that their agents strip.
//! The original design's figure 4 (one router, three backend subnets),
//! figure 5 (router A feeds a backend and router B, which feeds two), and
//! a mix of an on-segment (L2) backend with two routed (IPIP) ones.
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::PathBuf,
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use lb_tests::{
    Bridge, Counter, FAST_TIMERS, Proc, StatusReport, Topology, check_super_packets_wrapped,
    counter, first_answer, first_group, registered, routed::Mrouter, wait_for,
};
use serde_json::Value;

const P: Duration = Duration::from_millis(200);
const POLL: Duration = Duration::from_millis(10);
const GROUP: Ipv4Addr = Ipv4Addr::new(239, 192, 0, 1);
const LB: usize = 0;
const CLIENT: usize = 1;
/// The first router: host 2 on the LB's segment.
const ROUTER: usize = 2;
/// A second LB on the LB's segment (host 3), where a test has one.
const SECOND_LB: usize = 3;
const MEGABYTE: u32 = 1 << 20;
/// Connections of a spread check: enough that a backend with a sixth of
/// the weight is more than 3 standard deviations inside the 15% bound.
const SPREAD: u32 = 2400;

/// A routed topology serving a VIP: the LB, the client, the routers'
/// daemons, and backends (host, weight) with their servers and agents.
struct Bed<'a> {
    topo: &'a Topology,
    pin: PathBuf,
    lb: Proc,
    /// The LB's arguments after `run --iface eth0 --pin-path PIN`.
    lb_args: Vec<String>,
    _routers: Vec<Mrouter>,
    vip: String,
    backends: Vec<(usize, u16)>,
    agents: BTreeMap<usize, Proc>,
    _servers: Vec<Proc>,
}

fn name(host: usize) -> String {
    format!("b{host}")
}

impl<'a> Bed<'a> {
    /// Starts the LB (TTL 4: up to three routers) and, for each backend, its
    /// server and agent; returns once all are registered, with the time
    /// that took from the agents' start.
    fn start(
        topo: &'a Topology,
        routers: Vec<Mrouter>,
        backends: &[(usize, u16)],
    ) -> anyhow::Result<(Self, Duration)> {
        Self::start_with(topo, routers, backends, &[], &[])
    }

    /// The same, the LB started with `lb_extra` too, the agents with
    /// `agent_extra`.
    fn start_with(
        topo: &'a Topology,
        routers: Vec<Mrouter>,
        backends: &[(usize, u16)],
        lb_extra: &[&str],
        agent_extra: &[&str],
    ) -> anyhow::Result<(Self, Duration)> {
        let vip = topo.segment_address(100).to_string();
        let mut args = FAST_TIMERS.to_vec();
        args.extend(["--ttl", "4", "--vip", &vip, "--service", "tcp:80"]);
        args.extend_from_slice(lb_extra);
        let (lb, pin) = topo.start_lb(LB, "lb", &args)?;
        let lb_args = args.iter().map(|a| (*a).to_owned()).collect();
        ensure!(
            lb.log_text().contains("routed UDP queries"),
            "the LB did not say it queries across routers: {}",
            lb.log_text()
        );
        let hosts: Vec<usize> = backends.iter().map(|&(h, _)| h).collect();
        let servers = topo.start_servers(&hosts)?;
        let mut bed = Bed {
            topo,
            pin,
            lb,
            lb_args,
            _routers: routers,
            vip,
            backends: backends.to_vec(),
            agents: BTreeMap::new(),
            _servers: servers,
        };
        let start = Instant::now();
        for &(host, weight) in backends {
            let weight = weight.to_string();
            let mut args = vec!["--iface", "eth0", "--vip", &bed.vip, "--weight", &weight];
            args.extend_from_slice(agent_extra);
            let agent = topo.spawn(host, &format!("agent{host}"), "backend-agent", &args)?;
            bed.agents.insert(host, agent);
        }
        let want = backends.len();
        wait_for(2 * P + Duration::from_secs(1), POLL, || {
            bed.status().ok().filter(|s| registered(s).len() == want)
        })
        .with_context(|| format!("{want} backends did not register"))?;
        let took = start.elapsed();
        // With --forwarding l2 the tables leave out the routed backends:
        // those outside the LB's /24.
        let l2 = lb_extra.windows(2).any(|w| w == ["--forwarding", "l2"]);
        let lb_net = |addr: std::net::Ipv4Addr| addr.octets()[..3].to_vec();
        let unreachable: Vec<_> = backends
            .iter()
            .map(|&(host, _)| topo.host(host).addr)
            .filter(|&addr| l2 && lb_net(addr) != lb_net(topo.host(LB).addr))
            .collect();
        bed.topo.wait_tables_without(&bed.pin, &unreachable)?;
        Ok((bed, took))
    }

    fn status(&self) -> anyhow::Result<StatusReport> {
        self.topo.status(&self.pin)
    }

    /// Runs http-probe in the client; its JSON line.
    fn probe(&self, mode: &str, n: u32) -> anyhow::Result<Value> {
        let target = format!("{}:80", self.vip);
        let out = self
            .topo
            .exec(CLIENT, "http-probe", &[mode, &target, &n.to_string()])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last().context("http-probe printed nothing")?;
        Ok(serde_json::from_str(line)?)
    }

    /// `count` short connections: each backend's share within 15% of its
    /// weight's share, and no error.
    fn check_spread(&self, count: u32) -> anyhow::Result<()> {
        let result = self.probe("spread", count)?;
        let errors = result["errors"].as_u64().context("errors")?;
        let names = result["names"].as_object().context("names")?;
        println!("spread of {count} connections: {names:?}, {errors} errors");
        ensure!(errors == 0, "{errors} connections failed");
        let total_weight: u32 = self.backends.iter().map(|&(_, w)| u32::from(w)).sum();
        for &(host, weight) in &self.backends {
            let got = names.get(&name(host)).and_then(Value::as_u64).unwrap_or(0) as f64;
            let want = f64::from(count) * f64::from(weight) / f64::from(total_weight);
            ensure!(
                (got - want).abs() <= 0.15 * want,
                "{} got {got} connections, {want:.0} expected (weight {weight})",
                name(host)
            );
        }
        Ok(())
    }

    /// A 1 MB upload and a 1 MB download through the VIP complete.
    fn check_large_transfers(&self) -> anyhow::Result<()> {
        let upload = self.probe("upload", MEGABYTE)?;
        println!("1 MB upload: {upload}");
        let answer = upload["answer"].as_str().unwrap_or_default();
        ensure!(
            answer.ends_with(&format!(" received {MEGABYTE}")),
            "upload failed: {upload}"
        );
        let download = self.probe("download", MEGABYTE)?;
        println!("1 MB download: {download}");
        ensure!(
            download["bytes"].as_u64() == Some(u64::from(MEGABYTE)),
            "download failed: {download}"
        );
        Ok(())
    }

    /// Starts `host`'s agent (`--vip`, weight 100) under `label`.
    fn start_agent(&mut self, host: usize, label: &str) -> anyhow::Result<()> {
        let agent = self.topo.spawn(
            host,
            label,
            "backend-agent",
            &["--iface", "eth0", "--vip", &self.vip],
        )?;
        self.agents.insert(host, agent);
        Ok(())
    }

    /// SIGTERM to `host`'s agent; the time until the LB no longer lists it.
    fn stop_agent(&mut self, host: usize) -> anyhow::Result<Duration> {
        let addr = self.topo.host(host).addr.to_string();
        let start = Instant::now();
        self.agents
            .get(&host)
            .context("no such agent")?
            .signal(libc::SIGTERM);
        wait_for(Duration::from_secs(3), POLL, || {
            self.status()
                .ok()
                .filter(|s| !registered(s).contains(&addr))
        })
        .with_context(|| format!("{addr} was not removed after SIGTERM"))?;
        let took = start.elapsed();
        let mut agent = self.agents.remove(&host).context("no such agent")?;
        ensure!(
            agent.wait_exit(Duration::from_secs(3))? == 0,
            "agent exit code"
        );
        Ok(took)
    }

    fn group_state(&self) -> anyhow::Result<String> {
        Ok(first_group(&self.status()?).state.clone())
    }
}

/// What every routed topology must do, `routers` deep: register within
/// 2 P, spread by weight with no error, carry 1 MB each way (path MTU
/// discovery through XDP's ICMP answer), remove a SIGTERM'd backend within
/// one P, keep the group alive while one backend is, and let it die after
/// all leave.
fn serves_through_routers(
    topo: &Topology,
    routers: Vec<Mrouter>,
    backends: &[(usize, u16)],
    depth: &str,
) -> anyhow::Result<()> {
    let (mut bed, took) = Bed::start(topo, routers, backends)?;
    println!(
        "{} backends registered through {depth} in {} ms of their agents' start (P = {} ms)",
        backends.len(),
        took.as_millis(),
        P.as_millis()
    );
    ensure!(
        bed.lb
            .log_text()
            .contains("net.ipv4.conf.eth0.forwarding on"),
        "the LB did not say it turned forwarding on for IPIP: {}",
        bed.lb.log_text()
    );
    ensure!(
        took <= 2 * P + Duration::from_millis(300),
        "registration took {took:?}"
    );
    bed.check_spread(SPREAD)?;
    bed.check_large_transfers()?;
    let status = bed.status()?;
    check_super_packets_wrapped(&status, depth)?;
    // Wire-sized frames, as a NIC delivers them to native XDP: this
    // measures path MTU discovery through XDP's ICMP answer, which a
    // sender's GSO never needs.
    topo.exec_program(
        CLIENT,
        "ethtool",
        &["-K", "eth0", "tso", "off", "gso", "off"],
    )?;
    bed.check_large_transfers()?;
    let status = bed.status()?;
    let group = first_group(&status);
    println!(
        "{} queries, {} reports; counters: {:?}",
        group.queries_sent, group.reports, status.counters
    );
    ensure!(
        counter(&status, Counter::RoutedReport)? > 0,
        "no routed report counted"
    );
    ensure!(
        counter(&status, Counter::IpipNewFlow)? >= u64::from(SPREAD),
        "flows not wrapped in IPIP"
    );
    ensure!(
        counter(&status, Counter::IpipTooBig)? > 0,
        "the upload never met the ICMP answer (path MTU discovery)"
    );
    ensure!(
        counter(&status, Counter::IpipNoNextHop)? == 0,
        "a packet had no next hop"
    );
    ensure!(
        status.next_hop_errors.is_empty(),
        "{:?}",
        status.next_hop_errors
    );
    let hosts: Vec<usize> = backends.iter().map(|&(h, _)| h).collect();
    let (last, others) = hosts.split_last().context("no backend")?;
    for &host in others {
        let took = bed.stop_agent(host)?;
        println!(
            "{} removed {} ms after SIGTERM",
            name(host),
            took.as_millis()
        );
        ensure!(took <= P, "removal took {took:?}");
    }
    sleep(4 * P);
    ensure!(
        bed.group_state()? == "alive",
        "the group died while {} is alive",
        name(*last)
    );
    bed.stop_agent(*last)?;
    let dead = wait_for(8 * P, POLL, || {
        bed.group_state().ok().filter(|s| s == "dead")
    });
    ensure!(
        dead.is_some(),
        "the group stayed alive after every backend left"
    );
    Ok(())
}

#[test]
fn figure_4_one_router_three_backend_subnets() -> anyhow::Result<()> {
    let mut topo = Topology::new(3, Bridge::Flooding)?;
    let mut backends = Vec::new();
    for (subnet, weight) in [(1, 100), (2, 200), (3, 300)] {
        let hosts = topo.add_subnet(ROUTER, subnet, 1)?;
        backends.push((hosts[0], weight));
    }
    topo.run(|topo| {
        topo.route_through(ROUTER, &[LB, CLIENT])?;
        let router = topo.start_mrouter(ROUTER, GROUP, &["eth0", "s1", "s2", "s3"])?;
        serves_through_routers(topo, vec![router], &backends, "one router")
    })
}

#[test]
fn figure_5_a_router_behind_a_router() -> anyhow::Result<()> {
    let mut topo = Topology::new(3, Bridge::Flooding)?;
    let backend1 = topo.add_subnet(ROUTER, 1, 1)?[0];
    let router_b = topo.add_subnet(ROUTER, 2, 1)?[0];
    let backend2 = topo.add_subnet(router_b, 3, 1)?[0];
    let backend3 = topo.add_subnet(router_b, 4, 1)?[0];
    topo.run(|topo| {
        topo.route_through(ROUTER, &[LB, CLIENT])?;
        let b = topo.host(router_b).addr;
        for subnet in [3, 4] {
            let prefix = format!(
                "{}/24",
                topo.gateway(subnet).to_string().replace(".254", ".0")
            );
            topo.add_route(ROUTER, &prefix, b)?;
        }
        let routers = vec![
            topo.start_mrouter(ROUTER, GROUP, &["eth0", "s1", "s2"])?,
            topo.start_mrouter(router_b, GROUP, &["eth0", "s3", "s4"])?,
        ];
        let backends = [(backend1, 100), (backend2, 200), (backend3, 300)];
        serves_through_routers(topo, routers, &backends, "up to two routers")
    })
}

/// One backend on the LB's segment (L2) and two behind a router (IPIP)
/// under one VIP: all three get their share, each by its own path.
#[test]
fn mixed_l2_and_ipip_backends_under_one_vip() -> anyhow::Result<()> {
    const ON_SEGMENT: usize = 3;
    let mut topo = Topology::new(4, Bridge::Flooding)?;
    let routed1 = topo.add_subnet(ROUTER, 1, 1)?[0];
    let routed2 = topo.add_subnet(ROUTER, 2, 1)?[0];
    topo.run(|topo| {
        topo.route_through(ROUTER, &[LB, CLIENT])?;
        let router = topo.start_mrouter(ROUTER, GROUP, &["eth0", "s1", "s2"])?;
        let backends = [(ON_SEGMENT, 100), (routed1, 100), (routed2, 100)];
        let (bed, took) = Bed::start(topo, vec![router], &backends)?;
        println!("mixed: 3 backends registered in {} ms", took.as_millis());
        bed.check_spread(SPREAD)?;
        let status = bed.status()?;
        let l2 = counter(&status, Counter::VipNewFlow)?;
        let ipip = counter(&status, Counter::IpipNewFlow)?;
        println!("new flows: {l2} by L2, {ipip} by IPIP");
        ensure!(
            l2 >= u64::from(SPREAD) / 4 && ipip >= u64::from(SPREAD) / 2,
            "L2 {l2}, IPIP {ipip}"
        );
        Ok(())
    })
}

/// One router with `subnets` backend subnets, a backend on each (weight
/// 100), the LB's segment routed through it (except for the subnets in
/// `unrouted`), smcroute running, the LB and agents given `extra` (LB's,
/// agents'); `body` gets the started bed.
fn one_router(
    subnets: u8,
    unrouted: &[u8],
    extra: [&[&str]; 2],
    body: impl FnOnce(&mut Bed<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    one_router_of(
        Topology::new(3, Bridge::Flooding)?,
        (subnets, subnets),
        unrouted,
        extra,
        body,
    )
}

/// The same in `topo` (hosts 0-2 as above, any more on the LB's segment
/// for the test), with only the backends of the first `started` of
/// `subnets` started; the others' hosts are there for the test to start.
fn one_router_of(
    mut topo: Topology,
    (subnets, started): (u8, u8),
    unrouted: &[u8],
    extra: [&[&str]; 2],
    body: impl FnOnce(&mut Bed<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut backends = Vec::new();
    for subnet in 1..=subnets {
        backends.push((topo.add_subnet(ROUTER, subnet, 1)?[0], 100));
    }
    backends.truncate(usize::from(started));
    topo.run(|topo| {
        topo.route_through(ROUTER, &[CLIENT])?;
        let via = topo.host(ROUTER).addr;
        for subnet in (1..=subnets).filter(|s| !unrouted.contains(s)) {
            topo.add_route(LB, &subnet_prefix(topo, subnet), via)?;
            // A host beyond the first three and the subnets' is a second LB.
            if topo.hosts.len() > usize::from(subnets) + 3 {
                topo.add_route(SECOND_LB, &subnet_prefix(topo, subnet), via)?;
            }
        }
        let ifaces: Vec<String> = std::iter::once("eth0".to_owned())
            .chain((1..=subnets).map(|s| format!("s{s}")))
            .collect();
        let ifaces: Vec<&str> = ifaces.iter().map(String::as_str).collect();
        let router = topo.start_mrouter(ROUTER, GROUP, &ifaces)?;
        let (mut bed, _) = Bed::start_with(topo, vec![router], &backends, extra[0], extra[1])?;
        body(&mut bed)
    })
}

/// `10.<net>.<subnet>.0/24`.
fn subnet_prefix(topo: &Topology, subnet: u8) -> String {
    let [a, b, c, _] = topo.gateway(subnet).octets();
    format!("{a}.{b}.{c}.0/24")
}

/// A routed backend the LB has no route to registers (its announcements
/// come through the router), but its packets cannot leave: they are
/// dropped and counted, the backend is named in the log and in `status`
/// with the FIB's reason, and it stays registered.
#[test]
fn a_backend_without_a_route_is_reported_never_blackholed_silently() -> anyhow::Result<()> {
    one_router(2, &[2], [&[], &[]], |bed| {
        let unrouted = bed.topo.host(bed.backends[1].0).addr;
        // Short connections until one lands on it (each does half the time).
        let mut dropped = 0;
        for _ in 0..5 {
            let result = bed.probe("spread", 10)?;
            println!("spread with one backend unrouted: {result}");
            dropped = counter(&bed.status()?, Counter::IpipNoNextHop)?;
            if dropped > 0 {
                break;
            }
        }
        ensure!(dropped > 0, "no connection met the unrouted backend");
        let status = bed.status()?;
        let error = status
            .next_hop_errors
            .iter()
            .find(|e| e.backend == unrouted)
            .with_context(|| {
                format!(
                    "status does not name {unrouted}: {:?}",
                    status.next_hop_errors
                )
            })?;
        println!(
            "status: no next hop toward {}: {} ({} drops)",
            error.backend, error.reason, error.drops
        );
        ensure!(
            registered(&status).contains(&unrouted.to_string()),
            "the backend was removed"
        );
        let logged = wait_for(Duration::from_secs(2), POLL, || {
            bed.lb
                .log_text()
                .lines()
                .find(|l| l.contains("no next hop toward it") && l.contains(&unrouted.to_string()))
                .map(str::to_owned)
        });
        ensure!(
            logged.is_some(),
            "the LB did not log it: {}",
            bed.lb.log_text()
        );
        Ok(())
    })
}

/// With `--forwarding l2`, routed backends register, are reported once
/// and get no traffic: the one on the segment gets every connection.
#[test]
fn with_forwarding_l2_routed_backends_are_reported_and_excluded() -> anyhow::Result<()> {
    const ON_SEGMENT: usize = 3;
    let mut topo = Topology::new(4, Bridge::Flooding)?;
    let routed = topo.add_subnet(ROUTER, 1, 1)?[0];
    topo.run(|topo| {
        topo.route_through(ROUTER, &[LB, CLIENT])?;
        let router = topo.start_mrouter(ROUTER, GROUP, &["eth0", "s1"])?;
        let backends = [(ON_SEGMENT, 100), (routed, 100)];
        let (bed, _) =
            Bed::start_with(topo, vec![router], &backends, &["--forwarding", "l2"], &[])?;
        let result = bed.probe("spread", 300)?;
        println!("--forwarding l2: {result}");
        ensure!(result["errors"] == 0, "connections failed: {result}");
        ensure!(
            result["names"][name(ON_SEGMENT)] == 300,
            "the routed backend got traffic: {result}"
        );
        let warning = format!("backend={}", topo.host(routed).addr);
        let lines = bed.lb.log_text();
        let reported: Vec<&str> = lines
            .lines()
            .filter(|l| l.contains("--forwarding is l2") && l.contains(&warning))
            .collect();
        ensure!(
            reported.len() == 1,
            "reported {} times: {lines}",
            reported.len()
        );
        Ok(())
    })
}

/// The agents' decapsulation program belongs to the agent: gone when it is
/// SIGKILL'd, one again (not two) when it restarts, and traffic flows.
/// Counted in the kernel by name (this bpftool predates `net show` of TCX
/// links): the namespace tests run one at a time, so this agent's is the
/// only one.
#[test]
fn a_killed_agent_leaves_no_decapsulation_program_behind() -> anyhow::Result<()> {
    one_router(1, &[], [&[], &[]], |bed| {
        let host = bed.backends[0].0;
        let programs = |bed: &Bed<'_>| -> anyhow::Result<usize> {
            let out = bed
                .topo
                .exec_program(host, "bpftool", &["-j", "prog", "show"])?;
            let all: Vec<Value> = serde_json::from_slice(&out.stdout)?;
            Ok(all.iter().filter(|p| p["name"] == "agent_decap").count())
        };
        ensure!(programs(bed)? == 1, "no decapsulation program attached");
        let mut agent = bed.agents.remove(&host).context("agent")?;
        agent.signal(libc::SIGKILL);
        agent.wait_exit(Duration::from_secs(3))?;
        let gone = wait_for(Duration::from_secs(2), POLL, || {
            programs(bed).ok().filter(|&n| n == 0)
        });
        ensure!(gone.is_some(), "the program outlived the SIGKILL'd agent");
        bed.start_agent(host, "agent-restarted")?;
        let again = wait_for(Duration::from_secs(2), POLL, || {
            programs(bed).ok().filter(|&n| n > 0)
        });
        ensure!(again == Some(1), "after the restart: {again:?} programs");
        sleep(2 * P);
        let result = bed.probe("spread", 50)?;
        println!("after the agent's restart: {result}");
        ensure!(result["errors"] == 0, "connections failed: {result}");
        Ok(())
    })
}

/// Restart adoption through IPIP: the control plane SIGKILL'd during a
/// long-lived connection, a new `run` takes the pins over, and the
/// connection goes on with the same backend.
#[test]
fn an_ipip_connection_survives_the_control_planes_restart() -> anyhow::Result<()> {
    one_router(3, &[], [&[], &[]], |bed| {
        let target = format!("{}:80", bed.vip);
        let hold = bed
            .topo
            .spawn(CLIENT, "hold", "http-probe", &["hold", &target, "3"])?;
        first_answer(&hold)?;
        bed.lb.signal(libc::SIGKILL);
        bed.lb.wait_exit(Duration::from_secs(5))?;
        let pin = bed.pin.to_str().context("pin")?.to_owned();
        let mut args = vec!["run", "--iface", "eth0", "--pin-path", &pin];
        args.extend(bed.lb_args.iter().map(String::as_str));
        let restarted = bed.topo.spawn(LB, "lb-restarted", "lb-user", &args)?;
        wait_for(Duration::from_secs(10), POLL, || {
            restarted.log_text().contains("took over").then_some(())
        })
        .with_context(|| format!("the LB did not adopt: {}", restarted.log_text()))?;
        let mut hold = hold;
        hold.wait_exit(Duration::from_secs(10))?;
        let text = hold.log_text();
        let line = text.lines().last().context("hold printed nothing")?;
        let v: Value = serde_json::from_str(line)?;
        println!("IPIP connection across the LB's SIGKILL and restart: {v}");
        ensure!(v["error"].is_null(), "the connection broke: {v}");
        ensure!(
            v["names"].as_array().is_some_and(|n| n.len() == 1),
            "the connection changed backend: {v}"
        );
        // The adopting instance restores the interface's original
        // forwarding value on its stop, not its predecessor's "1".
        let mut restarted = restarted;
        restarted.signal(libc::SIGTERM);
        restarted.wait_exit(Duration::from_secs(5))?;
        let forwarding =
            bed.topo
                .exec_program(LB, "sysctl", &["-n", "net.ipv4.conf.eth0.forwarding"])?;
        ensure!(
            String::from_utf8_lossy(&forwarding.stdout).trim() == "0",
            "the stop after the restart left forwarding on"
        );
        bed.lb = restarted;
        Ok(())
    })
}

/// With a key, routed messages are authenticated both ways: the LB counts
/// only tagged reports, and an agent with another key ignores the LB's
/// routed queries (it never learns the LB, so it never announces to it).
#[test]
fn with_a_key_routed_queries_and_reports_are_authenticated() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("xlb-routed-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let key = dir.join("good.key");
    let other = dir.join("other.key");
    std::fs::write(&key, "00112233445566778899aabbccddeeff\n")?;
    std::fs::write(&other, "ffeeddccbbaa99887766554433221100\n")?;
    let key = key.to_str().context("path")?.to_owned();
    let other = other.to_str().context("path")?.to_owned();
    let keyed = ["--key-file", key.as_str()];
    let result = one_router(2, &[], [&keyed, &keyed], |bed| {
        let stranger = bed.topo.host(bed.backends[1].0);
        let (host, addr) = (bed.backends[1].0, stranger.addr.to_string());
        bed.stop_agent(host)?;
        let agent = bed.topo.spawn(
            host,
            "agent-other-key",
            "backend-agent",
            &["--iface", "eth0", "--vip", &bed.vip, "--key-file", &other],
        )?;
        // The other key's reports are refused while the group's own are
        // counted: wait for one of each (queries go out every P).
        let refused_and_counted = |s: &StatusReport| {
            counter(s, Counter::RoutedReport).is_ok_and(|n| n > 0)
                && counter(s, Counter::RoutedRefused).is_ok_and(|n| n > 0)
        };
        let status = wait_for(10 * P, POLL, || {
            bed.status().ok().filter(refused_and_counted)
        })
        .map_or_else(|| bed.status(), Ok)?;
        println!(
            "routed reports counted {}, refused {}",
            counter(&status, Counter::RoutedReport)?,
            counter(&status, Counter::RoutedRefused)?
        );
        ensure!(
            counter(&status, Counter::RoutedReport)? > 0,
            "no tagged report counted"
        );
        ensure!(
            counter(&status, Counter::RoutedRefused)? > 0,
            "the other key's report was counted"
        );
        ensure!(
            !registered(&status).contains(&addr),
            "{addr} registered with another key"
        );
        let out = bed
            .topo
            .exec(host, "backend-agent", &["--status", "--iface", "eth0"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            text.contains("none has queried yet"),
            "the agent with another key accepted a routed query: {text}\n{}",
            agent.log_text()
        );
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The second chance through a router (protocol §7): two LBs serve one
/// VIP with two IPIP backends behind the router; the client's 200
/// keep-alive connections go through LB 1 (a permanent neighbour entry
/// for the VIP); a third backend joins behind the router; then the client
/// moves to LB 2, which knows none of the connections. LB 2 sends those
/// whose pick is the joining backend to it wrapped twice through the
/// router; its agent hands them on, through the router again, to the
/// backend that holds them: none breaks or moves.
#[test]
fn through_a_router_a_failover_after_a_join_breaks_no_connection() -> anyhow::Result<()> {
    let window = Duration::from_secs(10);
    let lb_extra = ["--second-chance-window", "10s"];
    let topo = Topology::new(4, Bridge::Flooding)?;
    one_router_of(topo, (3, 2), &[], [&lb_extra, &[]], |bed| {
        let topo = bed.topo;
        let pin2 = topo.pin_path("lb2");
        let pin2_str = pin2.to_str().context("pin")?.to_owned();
        let mut args = vec!["run", "--iface", "eth0", "--pin-path", &pin2_str];
        args.extend(bed.lb_args.iter().map(String::as_str));
        let _lb2 = topo.spawn(SECOND_LB, "lb2", "lb-user", &args)?;
        topo.wait_backends(&pin2, "active", 2, Duration::from_secs(10))?;
        topo.wait_tables(&pin2)?;
        sleep(window + Duration::from_millis(500));
        let vip = bed.vip.clone();
        topo.send_vip_through(CLIENT, &vip, LB)?;
        let target = format!("{vip}:80");
        let mut many = topo.spawn(CLIENT, "many", "http-probe", &["many", &target, "10"])?;
        sleep(Duration::from_secs(2));
        let joining = topo.hosts.len() - 1;
        let _server = topo.start_servers(&[joining])?;
        bed.start_agent(joining, "agent-joined")?;
        for pin in [&bed.pin, &pin2] {
            topo.wait_backends(pin, "active", 3, Duration::from_secs(5))?;
            topo.wait_tables(pin)?;
        }
        sleep(Duration::from_secs(1));
        topo.send_vip_through(CLIENT, &vip, SECOND_LB)?;
        many.wait_exit(Duration::from_secs(30))?;
        let text = many.log_text();
        let line = text
            .lines()
            .last()
            .context("http-probe many printed nothing")?;
        let v: Value = serde_json::from_str(line)?;
        let second_chances = counter(&topo.status(&pin2)?, Counter::VipSecondChance)?;
        println!(
            "through the router, a failover after a join: {v}; LB 2's second chances: {second_chances}"
        );
        ensure!(
            v["broken_connections"] == 0 && v["moved"] == 0 && v["failures"] == 0,
            "connections broke or moved: {v}"
        );
        ensure!(second_chances > 0, "no second chance taken");
        Ok(())
    })
}
