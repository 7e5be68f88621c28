//! Connection continuity (protocol §7, second chance): the agents'
//! decapsulation program keeps a second-chance packet whose connection its
//! backend holds and hands the rest on, once, to the backend the LB names;
//! a connection no backend holds fails fast (RST). The packets are forged
//! with the LB's address, as the LB sends them, for a real connection
//! through the LB.
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use lb_tests::{Bridge, FAST_TIMERS, Proc, Topology, first_answer, wait_for, with_topology};

const LB: usize = 0;
const BACKENDS: [usize; 2] = [1, 2];
const CLIENT: usize = 3;
const POLL: Duration = Duration::from_millis(50);

/// The agent's decapsulation counter `name` on `host`, as its status file
/// has it (written at each query, every 200 ms here).
fn decap_counter(topo: &Topology, host: usize, name: &str) -> anyhow::Result<u64> {
    let out = topo.exec(host, "backend-agent", &["--status", "--iface", "eth0"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("IPIP decapsulation: "))
        .with_context(|| format!("no decapsulation counters in: {text}"))?;
    Ok(line
        .split(' ')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Waits (bounded) until `host`'s counter `name` is at least `want`.
fn wait_counter(topo: &Topology, host: usize, name: &str, want: u64) -> anyhow::Result<()> {
    wait_for(Duration::from_secs(3), POLL, || {
        decap_counter(topo, host, name).ok().filter(|&n| n >= want)
    })
    .with_context(|| format!("host {host}: {name} did not reach {want}"))?;
    Ok(())
}

/// The RSTs host `host`'s kernel sent (`Tcp: OutRsts` of /proc/net/snmp).
fn resets_sent(topo: &Topology, host: usize) -> anyhow::Result<u64> {
    let out = topo.exec_program(host, "cat", &["/proc/net/snmp"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (
        tcp.next().context("Tcp names")?,
        tcp.next().context("Tcp values")?,
    );
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "OutRsts")
        .and_then(|(_, v)| v.parse().ok())
        .context("no OutRsts")
}

/// The client's port of its one established connection to `vip`:80.
fn client_port(topo: &Topology, vip: &str) -> anyhow::Result<u16> {
    let filter = format!("dst {vip}:80");
    let out = topo.exec_program(CLIENT, "ss", &["-Htn", "state", "established", &filter])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let local = text
        .split_whitespace()
        .nth(2)
        .with_context(|| format!("no connection to {vip}: {text}"))?;
    let port = local.rsplit(':').next().context("port")?;
    Ok(port.parse()?)
}

/// The LB serving a VIP (tcp:80) at layer 2, both backends' HTTP servers
/// and agents, registered, in its table and decapsulating from it.
struct Serving {
    _lb: Proc,
    vip: String,
    lb: String,
    _servers: Vec<Proc>,
    agents: Vec<Proc>,
}

fn serving(topo: &Topology) -> anyhow::Result<Serving> {
    let vip = topo.segment_address(100).to_string();
    let mut args = FAST_TIMERS.to_vec();
    args.extend(["--vip", &vip, "--service", "tcp:80"]);
    let (lb_proc, pin) = topo.start_lb(LB, "lb", &args)?;
    let servers = topo.start_servers(&BACKENDS)?;
    let agents = topo.spawn_agents(&BACKENDS, &["--iface", "eth0", "--vip", &vip])?;
    let lb = topo.host(LB).addr.to_string();
    // Both agents decapsulate from the LB once it has queried them.
    for host in BACKENDS {
        wait_for(Duration::from_secs(5), POLL, || {
            let out = topo
                .exec(host, "backend-agent", &["--status", "--iface", "eth0"])
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains(&lb)
                .then_some(())
        })
        .with_context(|| format!("host {host} never heard the LB"))?;
    }
    topo.wait_backends(&pin, "active", 2, Duration::from_secs(5))?;
    topo.wait_tables(&pin)?;
    Ok(Serving {
        _lb: lb_proc,
        vip,
        lb,
        _servers: servers,
        agents,
    })
}

/// A long-lived connection from the client to the VIP, and the backend
/// host that answered it.
fn hold(topo: &Topology, vip: &str, seconds: u32) -> anyhow::Result<(Proc, usize)> {
    let target = format!("{vip}:80");
    let hold = topo.spawn(
        CLIENT,
        "hold",
        "http-probe",
        &["hold", &target, &seconds.to_string()],
    )?;
    let name = first_answer(&hold)?;
    let holder = BACKENDS
        .into_iter()
        .find(|&h| name == format!("b{h}"))
        .with_context(|| format!("answered by {name}"))?;
    Ok((hold, holder))
}

#[test]
fn a_second_chance_reaches_the_backend_that_holds_the_connection_once() -> anyhow::Result<()> {
    with_topology(4, Bridge::Flooding, |topo| {
        let Serving { vip, lb, .. } = &serving(topo)?;
        let (vip, lb) = (vip.as_str(), lb.as_str());
        let target = format!("{vip}:80");
        let (hold, holder) = hold(topo, vip, 30)?;
        let other = BACKENDS
            .into_iter()
            .find(|&h| h != holder)
            .context("other")?;
        let client = format!("{}:{}", topo.host(CLIENT).addr, client_port(topo, vip)?);
        let addr = |h: usize| topo.host(h).addr.to_string();
        let send = |first: usize, middle_src: &str, next: usize, client: &str| {
            let (first, next) = (addr(first), addr(next));
            let args = [lb, &first, middle_src, &next, client, &target];
            topo.exec(LB, "second-chance", &args)
        };
        let counter = |h, name| decap_counter(topo, h, name);

        // Sent first to the backend that holds the connection: kept there.
        let kept = counter(holder, "second_chance_kept")?;
        send(holder, lb, other, &client)?;
        wait_counter(topo, holder, "second_chance_kept", kept + 1)?;

        // Sent first to the other one: handed on once, taken by the holder
        // as plain IPIP from the LB, and its socket answers (no RST).
        let (handed, decapsulated) = (
            counter(other, "second_chance_handed_on")?,
            counter(holder, "decapsulated")?,
        );
        let resets = resets_sent(topo, holder)?;
        send(other, lb, holder, &client)?;
        wait_counter(topo, other, "second_chance_handed_on", handed + 1)?;
        wait_counter(topo, holder, "decapsulated", decapsulated + 1)?;
        ensure!(
            resets_sent(topo, holder)? == resets,
            "the holder reset the connection it holds"
        );
        ensure!(
            counter(holder, "second_chance_handed_on")? == 0,
            "the packet was handed on twice"
        );

        // A connection no backend holds fails fast: handed on, then reset.
        let port: u16 = client.rsplit(':').next().context("port")?.parse()?;
        let gone = format!("{}:{}", topo.host(CLIENT).addr, port ^ 1);
        let resets = resets_sent(topo, holder)?;
        send(other, lb, holder, &gone)?;
        wait_counter(topo, other, "second_chance_handed_on", handed + 2)?;
        wait_for(Duration::from_secs(3), POLL, || {
            resets_sent(topo, holder).ok().filter(|&n| n > resets)
        })
        .context("no RST for a connection no backend holds")?;

        // Only the LB that sent the packet may name the next backend.
        let refused = counter(other, "second_chance_refused")?;
        let stranger = Ipv4Addr::new(192, 0, 2, 1).to_string();
        send(other, &stranger, holder, &client)?;
        wait_counter(topo, other, "second_chance_refused", refused + 1)?;
        ensure!(
            counter(other, "second_chance_handed_on")? == handed + 2,
            "a packet another source named the next backend in was handed on"
        );
        ensure!(
            !hold.log_text().contains("error"),
            "the held connection broke: {}",
            hold.log_text()
        );
        Ok(())
    })
}

/// A backend that leaves takes its connections with it, and they fail
/// fast: the LB sends their next packet to another backend, whose stack
/// resets it, instead of leaving the client waiting on a dead path.
#[test]
fn a_departed_backends_connections_are_reset_not_left_hanging() -> anyhow::Result<()> {
    with_topology(4, Bridge::Flooding, |topo| {
        let serving = serving(topo)?;
        let (mut hold, holder) = hold(topo, &serving.vip, 20)?;
        let index = BACKENDS
            .iter()
            .position(|&h| h == holder)
            .context("holder")?;
        let left = Instant::now();
        // Its server stays up: only the backend's registration goes.
        serving.agents[index].signal(libc::SIGTERM);
        hold.wait_exit(Duration::from_secs(5))?;
        let took = left.elapsed();
        let log = hold.log_text();
        println!(
            "b{holder} left; its held connection ended {} ms later: {}",
            took.as_millis(),
            log.trim()
        );
        ensure!(
            log.contains("reset"),
            "the connection did not end in a reset: {log}"
        );
        ensure!(
            took < Duration::from_secs(2),
            "the connection took {took:?} to fail"
        );
        Ok(())
    })
}

/// What the client's 200 keep-alive connections saw (`http-probe many`).
#[derive(Debug)]
struct Seen {
    broken: u64,
    failures: u64,
    moved: u64,
    requests: u64,
}

impl Seen {
    /// What `http-probe many` printed when it ended.
    fn parse(line: &str) -> anyhow::Result<Self> {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let get = |k: &str| v[k].as_u64().with_context(|| format!("{k} in {line}"));
        Ok(Seen {
            broken: get("broken_connections")?,
            failures: get("failures")?,
            moved: get("moved")?,
            requests: get("requests")?,
        })
    }
}

/// Waits (bounded) for `http-probe many` to end; what it saw.
fn seen(many: &mut Proc) -> anyhow::Result<Seen> {
    many.wait_exit(Duration::from_secs(30))?;
    let log = many.log_text();
    Seen::parse(
        log.lines()
            .last()
            .context("no result from http-probe many")?,
    )
}

/// The LB arguments of these tests: fast timers, the VIP's tcp:80, the
/// second-chance window (as `window_arg`, e.g. "10000ms"), and `extra`.
fn lb_args<'a>(vip: &'a str, window_arg: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = FAST_TIMERS.to_vec();
    args.extend(["--vip", vip, "--service", "tcp:80"]);
    args.extend(["--second-chance-window", window_arg]);
    args.extend_from_slice(extra);
    args
}

/// A scenario run twice, with a second-chance window no backend reaches
/// (the case must break connections) and with one of 10 s, longer than
/// the connections run after the change: none may break or move.
fn before_and_after(scenario: impl Fn(Duration) -> anyhow::Result<Seen>) -> anyhow::Result<()> {
    let without = scenario(Duration::from_secs(3600))?;
    ensure!(
        without.broken > 0,
        "the case does not break connections even without a second chance: {without:?}"
    );
    let with = scenario(Duration::from_secs(10))?;
    ensure!(with.requests > 0, "no request made: {with:?}");
    ensure!(
        with.broken == 0 && with.failures == 0 && with.moved == 0,
        "with a second chance: {with:?} (without: {without:?})"
    );
    Ok(())
}

/// A change of the backends that an LB failover follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    /// A third backend joins.
    Join,
    /// The third backend, there from the start, drains.
    Drain,
}

/// Failover after a change: two LBs serve one VIP at layer 2 with the same
/// backends; the client reaches it through LB 1 (a permanent neighbour
/// entry for the VIP, as a router's ECMP next hop); its 200 keep-alive
/// connections run while the third backend joins or drains and both LBs
/// take the change in; then the client's neighbour entry moves to LB 2,
/// which has none of the connections in its table. `window` is both LBs'
/// second-chance window.
fn failover_after(change: Change, window: Duration) -> anyhow::Result<Seen> {
    const LB2: usize = 4;
    const CLIENT2: usize = 5;
    const THIRD: usize = 3;
    with_topology(6, Bridge::Flooding, |topo| {
        let vip = topo.segment_address(100).to_string();
        let window_arg = format!("{}ms", window.as_millis());
        let args = lb_args(&vip, &window_arg, &[]);
        let (_lb1, pin1) = topo.start_lb(LB, "lb1", &args)?;
        let (_lb2, pin2) = topo.start_lb(LB2, "lb2", &args)?;
        let _servers = topo.start_servers(&[1, 2, THIRD])?;
        let agent_args = ["--iface", "eth0", "--vip", &vip];
        let first = match change {
            Change::Join => BACKENDS.to_vec(),
            Change::Drain => vec![1, 2, THIRD],
        };
        let mut agents = topo.spawn_agents(&first, &agent_args)?;
        for pin in [&pin1, &pin2] {
            topo.wait_backends(pin, "active", first.len(), Duration::from_secs(5))?;
            topo.wait_tables(pin)?;
        }
        // The first backends become old enough for the previous tables.
        if window < Duration::from_secs(60) {
            std::thread::sleep(window + Duration::from_millis(500));
        }
        topo.send_vip_through(CLIENT2, &vip, LB)?;
        let target = format!("{vip}:80");
        let mut many = topo.spawn(CLIENT2, "many", "http-probe", &["many", &target, "10"])?;
        std::thread::sleep(Duration::from_secs(2));
        match change {
            Change::Join => agents.extend(topo.spawn_agents(&[THIRD], &agent_args)?),
            Change::Drain => agents[2].signal(libc::SIGUSR1),
        }
        let (state, count) = match change {
            Change::Join => ("active", 3),
            Change::Drain => ("draining", 1),
        };
        for pin in [&pin1, &pin2] {
            topo.wait_backends(pin, state, count, Duration::from_secs(5))?;
            topo.wait_tables(pin)?;
        }
        std::thread::sleep(Duration::from_secs(1));
        topo.send_vip_through(CLIENT2, &vip, LB2)?;
        let seen = seen(&mut many)?;
        let status = topo.status(&pin2)?;
        println!(
            "{change:?}, window {window:?}: {seen:?}; LB 2 second chances: {}; handed on by the third backend: {}",
            lb_tests::counter(&status, lb_tests::Counter::VipSecondChance)?,
            decap_counter(topo, THIRD, "second_chance_handed_on")?
        );
        Ok(seen)
    })
}

/// Issue 22's first measured case: without a second chance (a window no
/// backend reaches) connections break when LB 2 takes over after the
/// join; with one, none breaks or moves.
#[test]
fn a_failover_after_a_join_breaks_no_connection() -> anyhow::Result<()> {
    before_and_after(|window| failover_after(Change::Join, window))
}

/// The family of a test's VIP and group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

const GROUP6: &str = "ff15::4c42";

impl Family {
    /// The VIP `last` of the segment, of this family; for IPv6 the first
    /// `hosts` hosts get their addresses first.
    fn vip(self, topo: &Topology, hosts: usize) -> anyhow::Result<String> {
        Ok(match self {
            Family::V4 => topo.segment_address(100).to_string(),
            Family::V6 => {
                for host in 0..hosts {
                    topo.ipv6(host)?;
                }
                let [a, b, c, ..] = topo.ipv6_address(0).segments();
                std::net::Ipv6Addr::new(a, b, c, 0, 0, 0, 0, 0x100).to_string()
            }
        })
    }

    /// The group arguments of the LB and the agents.
    fn group_args(self) -> &'static [&'static str] {
        match self {
            Family::V4 => &[],
            Family::V6 => &["--group", GROUP6],
        }
    }
}

/// One LB started with `args`, backends 1 and 2 registered and in its
/// tables, older than `window` when it is short, and the third backend's
/// server already up (its agent is the test's to start).
struct TwoBackends {
    lb: Proc,
    pin: std::path::PathBuf,
    vip: String,
    family: Family,
    _servers: Vec<Proc>,
    _agents: Vec<Proc>,
}

impl TwoBackends {
    fn agent_args(&self) -> Vec<&str> {
        let mut args = vec!["--iface", "eth0", "--vip", &self.vip];
        args.extend_from_slice(self.family.group_args());
        args
    }

    /// `ADDR:PORT` of the VIP's port 80.
    fn target(&self) -> String {
        match self.family {
            Family::V4 => format!("{}:80", self.vip),
            Family::V6 => format!("[{}]:80", self.vip),
        }
    }
}

fn two_backends_behind_one_lb(
    topo: &Topology,
    (vip, family): (&str, Family),
    args: &[&str],
    window: Duration,
) -> anyhow::Result<TwoBackends> {
    let (lb, pin) = topo.start_lb(LB, "lb", args)?;
    // Dual-stack servers: IPv4 clients too.
    let servers = [1, 2, 3]
        .into_iter()
        .map(|h| topo.start_server(h, "[::]:80"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut two = TwoBackends {
        lb,
        pin,
        vip: vip.to_owned(),
        family,
        _servers: servers,
        _agents: Vec::new(),
    };
    two._agents = topo.spawn_agents(&BACKENDS, &two.agent_args())?;
    topo.wait_backends(&two.pin, "active", 2, Duration::from_secs(5))?;
    topo.wait_tables(&two.pin)?;
    if window < Duration::from_secs(60) {
        std::thread::sleep(window + Duration::from_millis(500));
    }
    Ok(two)
}

/// An LB restarted with a fresh table (SIGTERM, then a new `run`: no
/// pins adopted) after a join: its 200 keep-alive connections retransmit
/// through the gap and reach a new LB that knows none of them, but learns
/// from the agents' announced ages which backends are older than its
/// window. `window` is its second-chance window; `family` the VIP's and
/// the backends' group's.
fn restart_after_a_join(window: Duration, family: Family) -> anyhow::Result<Seen> {
    const JOINING: usize = 3;
    let mut result = None;
    with_topology(5, Bridge::Flooding, |topo| {
        let window_arg = format!("{}ms", window.as_millis());
        let vip = family.vip(topo, 5)?;
        let args = lb_args(&vip, &window_arg, family.group_args());
        let mut two = two_backends_behind_one_lb(topo, (&vip, family), &args, window)?;
        let target = two.target();
        let mut many = topo.spawn(4, "many", "http-probe", &["many", &target, "10"])?;
        std::thread::sleep(Duration::from_secs(2));
        let _joined = topo.spawn_agents(&[JOINING], &two.agent_args())?;
        topo.wait_backends(&two.pin, "active", 3, Duration::from_secs(5))?;
        topo.wait_tables(&two.pin)?;
        std::thread::sleep(Duration::from_secs(1));
        two.lb.signal(libc::SIGTERM);
        ensure!(
            two.lb.wait_exit(Duration::from_secs(5))? == 0,
            "the LB did not stop cleanly"
        );
        let restarted = std::time::Instant::now();
        let (lb_again, pin) = topo.start_lb(LB, "lb-again", &args)?;
        topo.wait_backends(&pin, "active", 3, Duration::from_secs(5))?;
        topo.wait_tables(&pin)?;
        println!(
            "the fresh LB had all three backends in its tables {} ms after the stop",
            restarted.elapsed().as_millis()
        );
        let seen = seen(&mut many)?;
        let status = topo.status(&pin)?;
        println!(
            "{family:?}, window {window:?}: {seen:?}; second chances: {}",
            lb_tests::counter(&status, lb_tests::Counter::VipSecondChance)?
        );
        drop(lb_again);
        result = Some(seen);
        Ok(())
    })?;
    result.context("no result")
}

/// Issue 22's third measured case: an LB that starts with a fresh table
/// after a join breaks connections without a second chance, none with one
/// (the backends' ages come with their announcements).
#[test]
fn an_lb_restarted_with_a_fresh_table_after_a_join_breaks_no_connection() -> anyhow::Result<()> {
    before_and_after(|window| restart_after_a_join(window, Family::V4))
}

/// The same with an IPv6 VIP served by IPv6 backends: the second chance
/// goes in IPv6 wrapped twice (protocol §8, IP-in-IP).
#[test]
fn an_lb_restarted_with_a_fresh_table_after_a_join_breaks_no_ipv6_connection() -> anyhow::Result<()>
{
    before_and_after(|window| restart_after_a_join(window, Family::V6))
}

/// A DRAINING backend's connections survive an LB failover: the previous
/// tables still name it (they take DRAINING backends), so the connections
/// LB 2 does not know reach it through their new pick; without a second
/// chance they break.
#[test]
fn a_draining_backends_connections_survive_a_failover() -> anyhow::Result<()> {
    before_and_after(|window| failover_after(Change::Drain, window))
}

/// What a SYN flood scenario saw: the keep-alive connections, the new
/// connections made during the flood (and how many failed), the flood's
/// rate.
#[derive(Debug)]
struct Flooded {
    seen: Seen,
    new_connections: u64,
    new_failed: u64,
    flood_pps: f64,
}

/// A SYN flood while a backend joins: spoofed SYNs at 20,000 a second for
/// 5 s into a connection table of `--max-flows 1024` (20 table-fulls a
/// second, as 5 Mpps into the default 262,144) while the client's 200
/// keep-alive connections run and a third backend joins; 100 new
/// connections are made during the flood. `window` is the LB's
/// second-chance window.
fn syn_flood_while_a_backend_joins(window: Duration) -> anyhow::Result<Flooded> {
    const JOINING: usize = 3;
    const CLIENT5: usize = 4;
    with_topology(5, Bridge::Flooding, |topo| {
        let window_arg = format!("{}ms", window.as_millis());
        let vip = topo.segment_address(100).to_string();
        let args = lb_args(&vip, &window_arg, &["--max-flows", "1024"]);
        let two = two_backends_behind_one_lb(topo, (&vip, Family::V4), &args, window)?;
        let (pin, agent_args) = (&two.pin, two.agent_args());
        let target = format!("{vip}:80");
        let mut many = topo.spawn(CLIENT5, "many", "http-probe", &["many", &target, "10"])?;
        std::thread::sleep(Duration::from_secs(1));
        let flood_args = ["syn", &vip, "80", "5", "10.200.0.0/16", "20000"];
        let mut flood = topo.spawn(CLIENT5, "flood", "flood", &flood_args)?;
        std::thread::sleep(Duration::from_secs(1));
        let _joined = topo.spawn_agents(&[JOINING], &agent_args)?;
        topo.wait_backends(pin, "active", 3, Duration::from_secs(5))?;
        let out = topo.exec(CLIENT5, "http-probe", &["spread", &target, "100"])?;
        let spread: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let new_failed = spread["errors"].as_u64().context("spread errors")?;
        flood.wait_exit(Duration::from_secs(15))?;
        let flood_log = flood.log_text();
        let flood_line = flood_log.lines().last().context("no result from flood")?;
        let flood_pps = serde_json::from_str::<serde_json::Value>(flood_line)?["pps"]
            .as_f64()
            .with_context(|| format!("pps in {flood_line}"))?;
        let flooded = Flooded {
            seen: seen(&mut many)?,
            new_connections: 100,
            new_failed,
            flood_pps,
        };
        let status = topo.status(pin)?;
        println!(
            "window {window:?}: {flooded:?}; second chances: {}; new flows: {}",
            lb_tests::counter(&status, lb_tests::Counter::VipSecondChance)?,
            lb_tests::counter(&status, lb_tests::Counter::VipNewFlow)?
        );
        Ok(flooded)
    })
}

/// Issue 22's second measured case: a SYN flood that turns the connection
/// table over twenty times a second while a backend joins breaks no
/// established connection (the flood evicts its own entries first, and a
/// connection that still lost its entry gets a second chance), and the new
/// connections made during the flood are served.
#[test]
fn a_syn_flood_while_a_backend_joins_breaks_no_connection() -> anyhow::Result<()> {
    let with = syn_flood_while_a_backend_joins(Duration::from_secs(10))?;
    ensure!(with.seen.requests > 0, "no request made: {with:?}");
    ensure!(
        with.flood_pps >= 10_000.0,
        "the flood reached only {:.0} packets a second: no flood to test against",
        with.flood_pps
    );
    ensure!(
        with.seen.broken == 0 && with.seen.moved == 0,
        "established connections broke or moved during the flood: {with:?}"
    );
    ensure!(
        with.new_failed == 0,
        "{} of {} new connections failed during the flood",
        with.new_failed,
        with.new_connections
    );
    Ok(())
}
