//! Several LBs, one VIP: each LB host runs BIRD with the
//! project's configuration (deploy/bird/lb.conf) and announces the VIP
//! while lb-user serves it; a router running BIRD merges the routes into
//! one ECMP route hashed on layer 4. A client behind the router keeps 200
//! connections busy while one LB host loses its link and comes back.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use lb_tests::{Bridge, Counter, Proc, Topology, counter, registered, wait_for};
use serde_json::Value;

const LB1: usize = 0;
const LB2: usize = 1;
const ROUTER: usize = 2;
const BACKENDS: [usize; 3] = [3, 4, 5];
/// A host on the segment whose agent starts while LB 1 is out.
const LATE_BACKEND: usize = 6;
const POLL: Duration = Duration::from_millis(50);
const GROUP6: &str = "ff15::4c42";
/// How long the probe runs, when LB 1 loses its link and when it gets it back.
const PROBE_SECONDS: u64 = 16;
const LINK_DOWN_AT: Duration = Duration::from_secs(3);
const LINK_UP_AT: Duration = Duration::from_secs(9);
/// The LBs' second-chance window (the default is 10 minutes): shorter
/// than the first backends' age when the late one joins, longer than the
/// rest of the probe after that (a second chance is not recorded: once
/// the late backend is older than the window, the flows it would take
/// from the others break).
const SECOND_CHANCE_WINDOW: Duration = Duration::from_secs(15);

fn repo_file(path: &str) -> anyhow::Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Starts BIRD in host `i` with `config` (logging to its log file).
fn start_bird(topo: &Topology, i: usize, name: &str, config: &str) -> anyhow::Result<Proc> {
    let conf = topo.logs.join(format!("{name}.conf"));
    std::fs::write(&conf, format!("log stderr all;\n{config}"))?;
    let path = |ext: &str| {
        topo.logs
            .join(format!("{name}.{ext}"))
            .to_string_lossy()
            .into_owned()
    };
    topo.spawn_program(
        i,
        name,
        "bird",
        &[
            "-f",
            "-c",
            &path("conf"),
            "-s",
            &path("ctl"),
            "-P",
            &path("pid"),
        ],
    )
}

/// The router's next hops toward `vip`.
fn next_hops(topo: &Topology, vip: IpAddr) -> usize {
    let (family, len) = if vip.is_ipv6() {
        ("-6", 128)
    } else {
        ("-4", 32)
    };
    topo.exec_program(
        ROUTER,
        "ip",
        &[family, "route", "show", &format!("{vip}/{len}")],
    )
    .map(|out| {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        match text.matches("nexthop").count() {
            0 if text.contains(" via ") => 1,
            n => n,
        }
    })
    .unwrap_or(0)
}

fn wait_next_hops(topo: &Topology, vip: IpAddr, want: usize) -> anyhow::Result<Duration> {
    let start = Instant::now();
    wait_for(Duration::from_secs(30), POLL, || {
        (next_hops(topo, vip) == want).then_some(())
    })
    .with_context(|| format!("the router never had {want} next hops toward {vip}"))?;
    Ok(start.elapsed())
}

/// Two LBs with BIRD, a router with BIRD and ECMP, three backends and a
/// client behind the router; `body` runs once the router has both LBs'
/// routes and both LBs every backend.
/// What the tests get: the VIP, and each LB's process, arguments and pins.
struct Lbs {
    vip: IpAddr,
    procs: [Proc; 2],
    args: Vec<String>,
    pins: [std::path::PathBuf; 2],
}

/// The VIP's family, and with it the backends' group's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

fn two_lbs_behind_ecmp(
    family: Family,
    body: impl FnOnce(&Topology, &mut Lbs) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut topo = Topology::new(7, Bridge::Flooding)?;
    let client = topo.add_subnet(ROUTER, 1, 1)?[0];
    topo.run(|topo| {
        let [a, b, _, _] = topo.host(LB1).addr.octets();
        let router = topo.host(ROUTER).addr;
        topo.sysctl(ROUTER, "net.ipv4.fib_multipath_hash_policy", "1")?;
        let client_net = format!("{a}.{b}.1.0/24");
        for h in BACKENDS.into_iter().chain([LATE_BACKEND]) {
            topo.add_route(h, &client_net, router)?;
        }
        let (vip, group_args): (IpAddr, &[&str]) = match family {
            Family::V4 => (Ipv4Addr::new(a, b, 200, 100).into(), &[]),
            Family::V6 => (ipv6_ecmp(topo, client)?.into(), &["--group", GROUP6]),
        };
        let lb_conf = repo_file("deploy/bird/lb.conf")?
            .replace("define UPSTREAM = 10.0.0.254;", &format!("define UPSTREAM = {router};"))
            .replace(
                "define UPSTREAM6 = 2001:db8::fe;",
                &format!("define UPSTREAM6 = {};", topo.ipv6_address(ROUTER)),
            );
        let mut neighbors = format!(
            "protocol bgp lb1 from lb {{ neighbor {} as 65001; }}\nprotocol bgp lb2 from lb {{ neighbor {} as 65001; }}\n",
            topo.host(LB1).addr,
            topo.host(LB2).addr
        );
        if family == Family::V6 {
            neighbors += &format!(
                "protocol bgp lb1v6 from lb {{ neighbor {} as 65001; }}\nprotocol bgp lb2v6 from lb {{ neighbor {} as 65001; }}\n",
                topo.ipv6_address(LB1),
                topo.ipv6_address(LB2)
            );
        }
        let router_conf = repo_file("deploy/bird/router-example.conf")?
            .lines()
            .filter(|l| !l.starts_with("protocol bgp lb"))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
            + &neighbors;
        let vip_text = vip.to_string();
        let window = format!("{}s", SECOND_CHANCE_WINDOW.as_secs());
        let mut lb_args = vec![
            "--vip",
            vip_text.as_str(),
            "--service",
            "tcp:80",
            "--second-chance-window",
            &window,
        ];
        lb_args.extend_from_slice(group_args);
        let (lb1, pin1) = topo.start_lb(LB1, "lb1", &lb_args)?;
        let (lb2, pin2) = topo.start_lb(LB2, "lb2", &lb_args)?;
        let _birds = [
            start_bird(topo, ROUTER, "bird-router", &router_conf)?,
            start_bird(topo, LB1, "bird-lb1", &lb_conf)?,
            start_bird(topo, LB2, "bird-lb2", &lb_conf)?,
        ];
        let _servers = [BACKENDS[0], BACKENDS[1], BACKENDS[2], LATE_BACKEND]
            .into_iter()
            .map(|h| topo.start_server(h, "[::]:80"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut agent_args = vec!["--iface", "eth0", "--vip", &vip_text];
        agent_args.extend_from_slice(group_args);
        let _agents = topo.spawn_agents(&BACKENDS, &agent_args)?;
        for pin in [&pin1, &pin2] {
            wait_for(Duration::from_secs(10), POLL, || {
                topo.status(pin).ok().filter(|s| registered(s).len() == BACKENDS.len())
            })
            .context("backends did not register with both LBs")?;
        }
        let registered_at = Instant::now();
        // A switch delivers a frame for an unknown MAC to no LB's NIC (its
        // MAC filter drops it); a bridge would flood it to every veth, and
        // LB 2's XDP would then carry LB 1's flows through its outage.
        for port in ["p1", "p2"] {
            topo.exec_program_in(&topo.bridge_ns, "bridge", &["link", "set", "dev", port, "flood", "off"])?;
        }
        let took = wait_next_hops(topo, vip, 2)?;
        println!("the router has both LBs' routes ({} ms)", took.as_millis());
        for pin in [&pin1, &pin2] {
            topo.wait_tables(pin)?;
        }
        // Older than the window (ages are whole seconds, hence the margin):
        // the previous tables name them.
        let margin = Duration::from_millis(1500);
        sleep((SECOND_CHANCE_WINDOW + margin).saturating_sub(registered_at.elapsed()));
        let mut lbs = Lbs {
            vip,
            procs: [lb1, lb2],
            args: lb_args.iter().map(|a| (*a).to_owned()).collect(),
            pins: [pin1, pin2],
        };
        body(topo, &mut lbs)
    })
}

/// IPv6 for an ECMP test: every host of the LBs' segment gets an address,
/// the client one on its subnet behind the router, the router multipath
/// hashing on layer 4 for IPv6 too, the backends routing the client's
/// subnet through it. The VIP, outside both subnets (the router routes it
/// by BGP).
fn ipv6_ecmp(topo: &Topology, client: usize) -> anyhow::Result<Ipv6Addr> {
    for host in 0..topo.hosts.len() - 1 {
        topo.ipv6(host)?;
    }
    let client_addr = topo.ipv6_subnet(ROUTER, 1, &[client])?[0];
    topo.sysctl(ROUTER, "net.ipv6.fib_multipath_hash_policy", "1")?;
    let [a, b, c, d, ..] = client_addr.segments();
    let client_net = Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0);
    let via = topo.ipv6_address(ROUTER).to_string();
    for h in BACKENDS.into_iter().chain([LATE_BACKEND]) {
        topo.exec_program(
            h,
            "ip",
            &[
                "-6",
                "route",
                "add",
                &format!("{client_net}/64"),
                "via",
                &via,
            ],
        )?;
    }
    Ok(Ipv6Addr::new(a, b, c, 0xc8, 0, 0, 0, 0x100))
}

/// Runs the 200-connection probe in the client while LB 1's link goes down
/// and up (and `while_out` runs while it is down); returns its result.
fn probe_across_an_outage(
    topo: &Topology,
    vip: IpAddr,
    while_out: impl FnOnce() -> anyhow::Result<()>,
    on_return: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Value> {
    let client = topo.hosts.len() - 1;
    let target = std::net::SocketAddr::new(vip, 80).to_string();
    let mut probe = topo.spawn(
        client,
        "probe",
        "http-probe",
        &["many", &target, &PROBE_SECONDS.to_string()],
    )?;
    let start = Instant::now();
    sleep(LINK_DOWN_AT);
    // LB 1's port on the bridge: its host is the first.
    let lb1_port = "p1";
    topo.exec_program_in(&topo.bridge_ns, "ip", &["link", "set", lb1_port, "down"])?;
    let withdrawn = wait_next_hops(topo, vip, 1)?;
    println!(
        "LB 1's link down: the router withdrew its route after {} ms",
        withdrawn.as_millis()
    );
    while_out()?;
    sleep(LINK_UP_AT.saturating_sub(start.elapsed()));
    topo.exec_program_in(&topo.bridge_ns, "ip", &["link", "set", lb1_port, "up"])?;
    on_return()?;
    let back = wait_next_hops(topo, vip, 2)?;
    println!(
        "LB 1's link up: the router took its route back after {} ms",
        back.as_millis()
    );
    probe.wait_exit(Duration::from_secs(PROBE_SECONDS + 20))?;
    let text = probe.log_text();
    let line = text.lines().last().context("the probe printed nothing")?;
    Ok(serde_json::from_str(line)?)
}

/// Client packets each LB forwarded so far.
fn forwarded(topo: &Topology, pins: &[std::path::PathBuf; 2]) -> anyhow::Result<[u64; 2]> {
    let mut packets = [0; 2];
    for (n, pin) in packets.iter_mut().zip(pins) {
        let status = topo.status(pin)?;
        *n = counter(&status, Counter::VipForwarded)? + counter(&status, Counter::VipNewFlow)?;
    }
    Ok(packets)
}

/// Both LBs carried flows (else the outage tested nothing).
fn check_both_forwarded(topo: &Topology, lbs: &Lbs) -> anyhow::Result<()> {
    let packets = forwarded(topo, &lbs.pins)?;
    println!(
        "client packets forwarded: LB 1 {}, LB 2 {}",
        packets[0], packets[1]
    );
    ensure!(
        packets.iter().all(|&p| p > 0),
        "an LB carried no flow: ECMP did not spread"
    );
    Ok(())
}

#[test]
fn connections_survive_an_lb_failure_and_return_behind_ecmp() -> anyhow::Result<()> {
    survive_an_lb_failure(Family::V4)
}

/// The same with an IPv6 VIP served by IPv6 backends: BIRD announces the
/// VIP as a /128 over the same BGP session.
#[test]
fn ipv6_connections_survive_an_lb_failure_and_return_behind_ecmp() -> anyhow::Result<()> {
    survive_an_lb_failure(Family::V6)
}

fn survive_an_lb_failure(family: Family) -> anyhow::Result<()> {
    two_lbs_behind_ecmp(family, |topo, lbs| {
        let result = probe_across_an_outage(topo, lbs.vip, || Ok(()), || Ok(()))?;
        println!("200 connections across LB 1's failure and return: {result}");
        check_both_forwarded(topo, lbs)?;
        ensure!(result["failures"] == 0, "connections failed: {result}");
        ensure!(
            result["moved"] == 0,
            "a connection changed backend: {result}"
        );
        Ok(())
    })
}

/// LB 1's host fails (its connection table is lost: lb-user stops, which
/// removes its pins) and a fourth backend joins before it returns. The
/// router moves flows to a fresh LB 1 that built its table with four
/// backends: the flows whose table entry the fourth backend took (Maglev:
/// about a quarter of those it meets afresh) get a second chance (the
/// fresh LB knows from the agents' ages that the first three are older
/// than its window), and none breaks.
#[test]
fn a_backend_joining_while_an_lb_host_is_down_breaks_no_connection() -> anyhow::Result<()> {
    two_lbs_behind_ecmp(Family::V4, |topo, lbs| {
        let vip_text = lbs.vip.to_string();
        let mut late = None;
        let mut share = 0.0;
        let vip = lbs.vip;
        let [lb1, _] = &mut lbs.procs;
        let pin1 = lbs.pins[0].to_str().context("pin")?.to_owned();
        let mut args = vec!["run", "--iface", "eth0", "--pin-path", &pin1];
        args.extend(lbs.args.iter().map(String::as_str));
        let mut restarted = None;
        let pins = &lbs.pins;
        let before = forwarded(topo, pins)?;
        let mut lb2_met_before_join = 0;
        let result = probe_across_an_outage(
            topo,
            vip,
            || {
                let now = forwarded(topo, pins)?;
                let (one, two) = (now[0] - before[0], now[1] - before[1]);
                share = one as f64 / (one + two).max(1) as f64;
                lb1.signal(libc::SIGTERM);
                lb1.wait_exit(Duration::from_secs(5))?;
                lb2_met_before_join = counter(&topo.status(&pins[1])?, Counter::VipNewFlow)?;
                late = Some(topo.spawn(
                    LATE_BACKEND,
                    "agent-late",
                    "backend-agent",
                    &["--iface", "eth0", "--vip", &vip_text],
                )?);
                Ok(())
            },
            || {
                restarted = Some(topo.spawn(LB1, "lb1-fresh", "lb-user", &args)?);
                Ok(())
            },
        )?;
        // Each flow the fresh LB 1 met, it met without an entry: a Maglev pick.
        let picked = counter(&topo.status(&pins[0])?, Counter::VipNewFlow)?;
        // A flow LB 1 carried whose retransmission reaches LB 2 only after
        // the join (backoff outlasts the route's withdrawal) is also a pick
        // from the four-backend table.
        let lb2_met = counter(&topo.status(&pins[1])?, Counter::VipNewFlow)? - lb2_met_before_join;
        let broken = result["broken_connections"].as_u64().context("broken")?;
        let second_chances: u64 = pins
            .iter()
            .map(|pin| counter(&topo.status(pin)?, Counter::VipSecondChance))
            .sum::<anyhow::Result<u64>>()?;
        println!(
            "LB 1's host down while a backend joined: {picked} connections came back to the fresh \
             LB 1 (it had {share:.2} of the traffic before) and LB 2 met {lb2_met} afresh after \
             the join; Maglev moves about a quarter of those, {:.0}, which {second_chances} \
             packets wrapped twice carried; {broken} of 200 broke: {result}",
            (picked + lb2_met) as f64 / 4.0
        );
        ensure!(
            result["moved"] == 0,
            "a connection changed backend: {result}"
        );
        ensure!(broken == 0, "connections broke: {result}");
        drop((late, restarted));
        Ok(())
    })
}
