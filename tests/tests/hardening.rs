//! Hardening on a real bridge: random loss of announcements does
//! not cause false removals, and a flood of spoofed announcements registers
//! nothing while the real backends stay registered and forwarding goes on.
use std::{
    collections::BTreeSet,
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use lb_tests::{
    Bridge, Counter, FAST_TIMERS, KEYED_P, KEYED_TIMERS, Proc, Topology, counter, first_group,
    registered, wait_for,
};
use serde_json::Value;

const LB: usize = 0;
const BACKENDS: [usize; 3] = [1, 2, 3];
const CLIENT: usize = 4;
const POLL: Duration = Duration::from_millis(20);

fn backend_addrs(topo: &Topology) -> Vec<String> {
    let mut v: Vec<String> = BACKENDS
        .iter()
        .map(|&h| topo.host(h).addr.to_string())
        .collect();
    v.sort();
    v
}

fn lossy(topo: &Topology) -> anyhow::Result<()> {
    // Default ratios (T = 2 P, N = 10) at P = 100 ms: 200 periods in 20 s.
    let period = Duration::from_millis(100);
    let (_lb, pin) = topo.start_lb(
        LB,
        "lossy",
        &[
            "--query-interval",
            "100ms",
            "--max-response-time",
            "50ms",
            "--timeout",
            "200ms",
            "--max-misses",
            "10",
        ],
    )?;
    let _agents: Vec<Proc> = topo.spawn_agents(&BACKENDS, &["--iface", "eth0"])?;
    let want = backend_addrs(topo);
    wait_for(Duration::from_secs(5), POLL, || {
        topo.status(&pin).ok().filter(|s| registered(s) == want)
    })
    .context("backends did not register")?;
    // 30% of announcements dropped at random by the bridge.
    let rules = topo.logs.join("loss.nft");
    std::fs::write(
        &rules,
        "table bridge xlbloss {\n  chain forward {\n    type filter hook forward priority 0;\n    udp dport 2000 numgen random mod 100 < 30 counter drop;\n  }\n}\n",
    )?;
    lb_tests::sh(
        "ip",
        &[
            "netns",
            "exec",
            &topo.bridge_ns,
            "nft",
            "-f",
            rules.to_str().context("path")?,
        ],
    )?;
    let start = Instant::now();
    let registrations = counter(&topo.status(&pin)?, Counter::AnnounceRegistered)?;
    let mut false_removals = BTreeSet::new();
    let mut polls = 0;
    while start.elapsed() < period * 200 {
        let status = topo.status(&pin)?;
        for addr in &want {
            if !registered(&status).contains(addr) {
                false_removals.insert(addr.clone());
            }
        }
        polls += 1;
        sleep(Duration::from_millis(50));
    }
    let status = topo.status(&pin)?;
    let out = lb_tests::sh(
        "ip",
        &[
            "netns",
            "exec",
            &topo.bridge_ns,
            "nft",
            "list",
            "table",
            "bridge",
            "xlbloss",
        ],
    )?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let dropped: u64 = listing
        .split("packets ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("nft counter")?;
    let accepted = counter(&status, Counter::AnnounceAccepted)?;
    let re_registered = counter(&status, Counter::AnnounceRegistered)? - registrations;
    println!(
        "30% announcement loss over 200 periods: {dropped} announcements dropped, {accepted} accepted, \
         {} backends missing at some poll ({polls} polls), {re_registered} re-registrations",
        false_removals.len()
    );
    ensure!(dropped > 0, "the loss rule dropped nothing");
    ensure!(
        false_removals.is_empty() && re_registered == 0,
        "false removals under loss: {false_removals:?}"
    );
    Ok(())
}

#[test]
fn random_loss_causes_no_false_removal() {
    lb_tests::with_topology(3 + 1, Bridge::Snooping, lossy).unwrap();
}

/// One phase of the flood test: an LB protected by `protection`, agents
/// started with `agent_extra`, a flood from sources outside the backends.
fn flood_phase(
    topo: &Topology,
    name: &str,
    protection: &[&str],
    agent_extra: &[&str],
    reject: Counter,
) -> anyhow::Result<()> {
    let lb_addr = topo.host(LB).addr.octets();
    let vip = topo.segment_address(100).to_string();
    let mut extra = vec![
        "--vip",
        &vip,
        "--service",
        "tcp:80",
        "--query-interval",
        "200ms",
    ];
    extra.extend_from_slice(protection);
    let (mut lb, pin) = topo.start_lb(LB, name, &extra)?;
    let mut procs = Vec::new();
    for &h in &BACKENDS {
        procs.push(topo.spawn(
            h,
            &format!("{name}-server{h}"),
            "name-server",
            &["0.0.0.0:80", &format!("b{h}")],
        )?);
        let mut args = vec!["--iface", "eth0", "--vip", &vip];
        args.extend_from_slice(agent_extra);
        procs.push(topo.spawn(h, &format!("{name}-agent{h}"), "backend-agent", &args)?);
    }
    let want = backend_addrs(topo);
    wait_for(Duration::from_secs(5), POLL, || {
        topo.status(&pin).ok().filter(|s| registered(s) == want)
    })
    .context("backends did not register")?;
    topo.wait_tables(&pin)?;
    let before = topo.status(&pin)?;
    let target = format!("{vip}:80");
    let hold = topo.spawn(
        CLIENT,
        &format!("{name}-hold"),
        "http-probe",
        &["hold", &target, "4"],
    )?;
    // Sources from the upper half of 10.x.0.0/16: never a backend's address.
    let flood_prefix = format!("{}.{}.128.0/17", lb_addr[0], lb_addr[1]);
    let lb_str = topo.host(LB).addr.to_string();
    let out = topo.exec(
        CLIENT,
        "flood",
        &["announce", &lb_str, "2000", "3", &flood_prefix],
    )?;
    let flood: Value = serde_json::from_slice(&out.stdout)?;
    let (names, errors) = {
        let out = topo.exec(CLIENT, "http-probe", &["spread", &target, "200"])?;
        let v: Value = serde_json::from_slice(&out.stdout)?;
        (v["names"].clone(), v["errors"].as_u64().unwrap_or(u64::MAX))
    };
    let mut hold = hold;
    hold.wait_exit(Duration::from_secs(15))?;
    let held: Value = serde_json::from_str(hold.log_text().lines().last().context("hold output")?)?;
    let after = topo.status(&pin)?;
    let rejected = counter(&after, reject)? - counter(&before, reject)?;
    println!(
        "[{name}] flood of {} spoofed announcements at {} pps: {rejected} rejected as {}, registered after: {:?}; \
         connections meanwhile: {names}, {errors} errors; long-lived connection {}",
        flood["sent"],
        flood["pps"],
        reject.name(),
        registered(&after),
        if held["error"].is_null() {
            "kept"
        } else {
            "broken"
        }
    );
    ensure!(
        registered(&after) == want,
        "the flood changed the server list: {:?}",
        registered(&after)
    );
    ensure!(
        counter(&after, Counter::AnnounceRegistered)?
            == counter(&before, Counter::AnnounceRegistered)?,
        "a spoofed source registered"
    );
    ensure!(rejected > 0, "no flood packet reached XDP");
    ensure!(
        errors == 0 && held["error"].is_null(),
        "forwarding suffered during the flood"
    );
    ensure!(
        first_group(&after).state == "alive",
        "the group died during the flood"
    );
    lb.signal(libc::SIGTERM);
    lb.wait_exit(Duration::from_secs(5))?;
    for p in &procs {
        p.signal(libc::SIGTERM);
    }
    Ok(())
}

/// Against an allowlist of the backends' addresses.
fn flood_against_allowlist(topo: &Topology) -> anyhow::Result<()> {
    let allow: Vec<String> = backend_addrs(topo)
        .iter()
        .map(|a| format!("{a}/32"))
        .collect();
    let mut protection = Vec::new();
    for a in &allow {
        protection.extend(["--allow", a.as_str()]);
    }
    flood_phase(
        topo,
        "allowlist",
        &protection,
        &[],
        Counter::AnnounceNotAllowed,
    )
}

/// Against a key that the flood does not have.
fn flood_against_key(topo: &Topology) -> anyhow::Result<()> {
    let key = topo.logs.join("flood.key");
    std::fs::write(&key, "f0e1d2c3b4a5968778695a4b3c2d1e0f\n")?;
    let key = key.to_str().context("key path")?;
    flood_phase(
        topo,
        "key",
        &["--key-file", key],
        &["--key-file", key],
        Counter::AuthBadTag,
    )
}

#[test]
fn spoofed_flood_against_an_allowlist_registers_nothing() {
    lb_tests::with_topology(5, Bridge::Snooping, flood_against_allowlist).unwrap();
}

#[test]
fn spoofed_flood_against_a_key_registers_nothing() {
    lb_tests::with_topology(5, Bridge::Snooping, flood_against_key).unwrap();
}

/// An LB and one agent, registered; the agent started before anything
/// queried it, and must recover from what each test does to it without a
/// restart.
struct Recovery<'a> {
    topo: &'a Topology,
    lb: Proc,
    pin: std::path::PathBuf,
    agent: Proc,
    netns: String,
    addr: String,
}

impl Recovery<'_> {
    fn has(&self, pin: &std::path::Path, a: &str) -> Option<()> {
        self.topo
            .status(pin)
            .ok()
            .filter(|s| registered(s).contains(&a.to_owned()))
            .map(|_| ())
    }

    /// The agent is still running: it recovered by itself.
    fn agent_alive(&mut self) -> anyhow::Result<()> {
        ensure!(
            self.agent.wait_exit(Duration::ZERO).is_err(),
            "the agent exited"
        );
        Ok(())
    }
}

fn with_agent(
    hosts: u8,
    body: impl FnOnce(&mut Recovery<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    lb_tests::with_topology(hosts, Bridge::Snooping, |topo| {
        let (lb, pin) = topo.start_lb(LB, "first", &FAST_TIMERS)?;
        let agent = topo.spawn(1, "agent", "backend-agent", &["--iface", "eth0"])?;
        let mut bed = Recovery {
            topo,
            lb,
            pin,
            agent,
            netns: topo.host(1).netns.clone(),
            addr: topo.host(1).addr.to_string(),
        };
        wait_for(Duration::from_secs(3), POLL, || {
            bed.has(&bed.pin, &bed.addr)
        })
        .context("first registration")?;
        body(&mut bed)?;
        bed.agent_alive()
    })
}

/// Its interface goes down long enough for it to be removed, then up.
fn interface_down_and_up(bed: &mut Recovery<'_>) -> anyhow::Result<()> {
    lb_tests::sh("ip", &["-n", &bed.netns, "link", "set", "eth0", "down"])?;
    wait_for(Duration::from_secs(5), POLL, || {
        bed.topo
            .status(&bed.pin)
            .ok()
            .filter(|s| !registered(s).contains(&bed.addr))
    })
    .context("the agent behind a down interface was not removed")?;
    let up = Instant::now();
    lb_tests::sh("ip", &["-n", &bed.netns, "link", "set", "eth0", "up"])?;
    wait_for(Duration::from_secs(5), POLL, || {
        bed.has(&bed.pin, &bed.addr)
    })
    .context("no registration after the interface came up")?;
    println!(
        "interface down and up: registered again {} ms after up",
        up.elapsed().as_millis()
    );
    Ok(())
}

/// Its address changes: the LB sees the new one, and the old one ages out.
fn address_change(bed: &mut Recovery<'_>) -> anyhow::Result<()> {
    let new_addr = bed.topo.segment_address(50).to_string();
    // Keep the new address when the old primary one goes.
    lb_tests::sh(
        "ip",
        &[
            "netns",
            "exec",
            &bed.netns,
            "sysctl",
            "-qw",
            "net.ipv4.conf.eth0.promote_secondaries=1",
        ],
    )?;
    lb_tests::sh(
        "ip",
        &[
            "-n",
            &bed.netns,
            "addr",
            "add",
            &format!("{new_addr}/24"),
            "dev",
            "eth0",
        ],
    )?;
    lb_tests::sh(
        "ip",
        &[
            "-n",
            &bed.netns,
            "addr",
            "del",
            &format!("{}/24", bed.addr),
            "dev",
            "eth0",
        ],
    )?;
    let changed = Instant::now();
    wait_for(Duration::from_secs(5), POLL, || {
        bed.topo
            .status(&bed.pin)
            .ok()
            .filter(|s| registered(s) == vec![new_addr.clone()])
    })
    .context("the new address did not replace the old one")?;
    println!(
        "address change: only the new address registered after {} ms",
        changed.elapsed().as_millis()
    );
    Ok(())
}

/// Its LB is replaced by one at another address.
fn lb_replaced(bed: &mut Recovery<'_>) -> anyhow::Result<()> {
    bed.lb.signal(libc::SIGTERM);
    bed.lb.wait_exit(Duration::from_secs(5))?;
    let replaced = Instant::now();
    let (_lb2, pin2) = bed.topo.start_lb(2, "second", &FAST_TIMERS)?;
    wait_for(Duration::from_secs(5), POLL, || bed.has(&pin2, &bed.addr))
        .context("the agent did not find the new LB")?;
    println!(
        "LB replaced at another address: registered {} ms after it started",
        replaced.elapsed().as_millis()
    );
    Ok(())
}

#[test]
fn agent_recovers_from_interface_down_and_up() {
    with_agent(3, interface_down_and_up).unwrap();
}

#[test]
fn agent_recovers_from_an_address_change() {
    with_agent(3, address_change).unwrap();
}

#[test]
fn agent_recovers_when_its_lb_is_replaced() {
    with_agent(3, lb_replaced).unwrap();
}

/// A keyed LB ([`KEYED_TIMERS`]: P = 600 ms, T = 1.2 s, N = 3) and three keyed agents, all
/// registered.
fn keyed(topo: &Topology) -> anyhow::Result<(Proc, std::path::PathBuf, Vec<Proc>)> {
    let key = topo.logs.join("leave.key");
    std::fs::write(&key, "0f1e2d3c4b5a69788796a5b4c3d2e1f0\n")?;
    let key = key.to_str().context("key path")?.to_owned();
    let mut extra = KEYED_TIMERS.to_vec();
    extra.extend(["--key-file", &key]);
    let (lb, pin) = topo.start_lb(LB, "keyed", &extra)?;
    let agents: Vec<Proc> =
        topo.spawn_agents(&BACKENDS, &["--iface", "eth0", "--key-file", &key])?;
    let want = backend_addrs(topo);
    wait_for(Duration::from_secs(5), POLL, || {
        topo.status(&pin).ok().filter(|s| registered(s) == want)
    })
    .context("keyed backends did not register")?;
    Ok((lb, pin, agents))
}

/// With a key, IGMP leaves forged from another host with a live backend's
/// address (20 a second for 5 s) never remove it: each only starts a
/// confirmation that the backend's authenticated announcement refutes.
fn forged_leaves(topo: &Topology) -> anyhow::Result<()> {
    let (lb, pin, _agents) = keyed(topo)?;
    let victim = topo.host(BACKENDS[0]).addr.to_string();
    let registrations = counter(&topo.status(&pin)?, Counter::AnnounceRegistered)?;
    let forger = topo.spawn(
        CLIENT,
        "forge-leave",
        lb_tests::bin("forge-leave").to_str().context("path")?,
        &[&victim, "239.192.0.1", "eth0", "20", "5"],
    );
    let mut forger = forger?;
    let start = Instant::now();
    let (mut polls, mut missing) = (0u32, 0u32);
    while start.elapsed() < Duration::from_secs(5) {
        if !registered(&topo.status(&pin)?).contains(&victim) {
            missing += 1;
        }
        polls += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(
        forger.wait_exit(Duration::from_secs(5))? == 0,
        "forge-leave failed: {}",
        forger.log_text()
    );
    let status = topo.status(&pin)?;
    let leaves = counter(&status, Counter::IgmpLeave)?;
    let refuted = lb.log_text().matches("IGMP leave not confirmed").count();
    println!(
        "forged leaves for {victim}: {} sent, {leaves} counted by XDP, {refuted} refuted; missing in {missing} of {polls} polls; registrations counted before {registrations}, after {}",
        forger.log_text().trim(),
        counter(&status, Counter::AnnounceRegistered)?
    );
    ensure!(leaves >= 50, "only {leaves} forged leaves reached XDP");
    ensure!(
        missing == 0,
        "the victim was missing in {missing} of {polls} polls"
    );
    ensure!(
        counter(&status, Counter::AnnounceRegistered)? == registrations,
        "the victim was removed and registered again"
    );
    Ok(())
}

/// With a key, a SIGKILL'd agent's own leave is confirmed: no announcement
/// answers the confirmation query, and it is removed within one P.
fn killed_keyed_agent(topo: &Topology) -> anyhow::Result<()> {
    let (lb, pin, agents) = keyed(topo)?;
    let victim = topo.host(BACKENDS[0]).addr.to_string();
    agents[0].signal(libc::SIGKILL);
    let killed = Instant::now();
    // Polled gently: each poll is a process, and the removal time comes
    // from the LB's own record below.
    let status = wait_for(Duration::from_secs(3), Duration::from_millis(25), || {
        topo.status(&pin)
            .ok()
            .filter(|s| !registered(s).contains(&victim))
    })
    .context("the killed keyed agent was not removed")?;
    let seen = killed.elapsed();
    // When the LB removed it, from its own departure record: the polling
    // `status` processes (tens of ms each on a loaded machine) are not
    // the LB's delay.
    let left_ms_ago = first_group(&status)
        .departed
        .iter()
        .find(|d| d.address.to_string() == victim)
        .map_or(0, |d| d.left_ms_ago);
    let gone = seen.saturating_sub(Duration::from_millis(left_ms_ago));
    println!(
        "keyed agent removed {} ms after SIGKILL (confirmed leave; seen by the polling after {} ms)",
        gone.as_millis(),
        seen.as_millis()
    );
    ensure!(gone <= KEYED_P, "removed after {gone:?}, more than one P");
    ensure!(
        lb.log_text().contains("IGMP leave confirmed"),
        "not removed by a confirmed leave"
    );
    let reason = lb_tests::departure_reason(&topo.status(&pin)?, &victim);
    ensure!(
        reason.as_deref() == Some("IGMP leave confirmed"),
        "status gives the departure as {reason:?}"
    );
    Ok(())
}

#[test]
fn forged_leaves_never_remove_a_keyed_backend() {
    lb_tests::with_topology(5, Bridge::Snooping, forged_leaves).unwrap();
}

#[test]
fn a_killed_keyed_agent_is_removed_within_one_period() {
    lb_tests::with_topology(5, Bridge::Snooping, killed_keyed_agent).unwrap();
}
