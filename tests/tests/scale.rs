//! Scale: `swarm` plays thousands of backends from one
//! namespace, speaking the agents' protocol; the LB registers them within
//! 2 P, keeps them while they answer, and removes them on time when they
//! fall silent. The 65,536-backend figures come from `cargo xtask bench`.
use std::{
    net::Ipv4Addr,
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use lb_tests::{
    Bridge, Counter, FAST_TIMERS, StatusReport, Topology, counter, cpu_time, first_group,
    registered, wait_for, with_topology,
};

const P: Duration = Duration::from_millis(200);
const T: Duration = Duration::from_millis(400);
const N: u32 = 3;
const POLL: Duration = Duration::from_millis(20);
const LB: usize = 0;
const SWARM_HOST: usize = 1;

/// The first member's address: off every host's /24 of the topology.
fn first_member(topo: &Topology) -> Ipv4Addr {
    let [a, b, _, _] = topo.host(LB).addr.octets();
    Ipv4Addr::new(a, b, 128, 1)
}

#[test]
fn a_swarm_of_10000_registers_stays_and_is_removed_on_time() -> anyhow::Result<()> {
    const COUNT: usize = 10_000;
    with_topology(2, Bridge::Flooding, |topo| {
        let (lb, pin) = topo.start_lb(LB, "lb", &FAST_TIMERS)?;
        let first = first_member(topo).to_string();
        let start = Instant::now();
        let mut swarm = topo.spawn(
            SWARM_HOST,
            "swarm",
            "swarm",
            &["eth0", &first, &COUNT.to_string()],
        )?;
        let all = |s: &StatusReport| registered(s).len() == COUNT;
        wait_for(2 * P + Duration::from_secs(1), POLL, || {
            topo.status(&pin).ok().filter(all)
        })
        .with_context(|| format!("{COUNT} backends did not register"))?;
        let took = start.elapsed();
        let cpu_before = cpu_time(lb.pid())?;
        let steady = Instant::now();
        sleep(Duration::from_secs(3));
        let cpu = (cpu_time(lb.pid())? - cpu_before).as_secs_f64() / steady.elapsed().as_secs_f64();
        let status_start = Instant::now();
        let status = topo.status(&pin)?;
        let status_took = status_start.elapsed();
        println!(
            "{COUNT} backends: registered {} ms after the swarm's start (P = {} ms); lb-user (debug build) \
             {:.1}% of a core in steady state; status --json {} ms",
            took.as_millis(),
            P.as_millis(),
            cpu * 100.0,
            status_took.as_millis()
        );
        ensure!(all(&status), "backends were lost in steady state");
        ensure!(first_group(&status).departed.is_empty(), "a false removal");
        ensure!(
            counter(&status, Counter::AnnounceTableFull)? == 0,
            "table full"
        );

        swarm.signal(libc::SIGKILL);
        swarm.wait_exit(Duration::from_secs(5))?;
        let silent = Instant::now();
        let limit = T * (N + 1) + 2 * P + Duration::from_secs(2);
        wait_for(limit, POLL, || {
            topo.status(&pin).ok().filter(|s| registered(s).is_empty())
        })
        .with_context(|| format!("not all removed within {limit:?} of silence"))?;
        let removed = silent.elapsed();
        println!(
            "all {COUNT} removed {} ms after falling silent ((N + 1) T = {} ms)",
            removed.as_millis(),
            (T * (N + 1)).as_millis()
        );
        ensure!(removed >= T * N, "removed before their misses ran out");
        let log = lb.log_text();
        let one_by_one = log.matches("backend removed: missed heartbeats").count();
        ensure!(
            log.contains("more backends removed: missed heartbeats") && one_by_one <= 100,
            "{one_by_one} removal lines: the log is flooded"
        );
        Ok(())
    })
}

/// The LB sees the same from a swarm member as from a real agent: same
/// counters, same entry (weight, state, misses, version), announcements
/// in step, authenticated the same way.
#[test]
fn the_lb_cannot_tell_a_swarm_member_from_an_agent() -> anyhow::Result<()> {
    const AGENT: usize = 1;
    const SWARM: usize = 2;
    with_topology(3, Bridge::Flooding, |topo| {
        let key = topo.logs.join("announce.key");
        std::fs::write(&key, "00112233445566778899aabbccddeeff\n")?;
        let key = key.to_str().context("key")?.to_owned();
        let mut args = FAST_TIMERS.to_vec();
        args.extend(["--key-file", &key]);
        let (_lb, pin) = topo.start_lb(LB, "lb", &args)?;
        let member = topo.segment_address(50).to_string();
        let _agent = topo.spawn(
            AGENT,
            "agent",
            "backend-agent",
            &["--iface", "eth0", "--key-file", &key],
        )?;
        let _swarm = topo.spawn(SWARM, "swarm", "swarm", &["eth0", &member, "1", &key])?;
        let agent_addr = topo.host(AGENT).addr.to_string();
        wait_for(Duration::from_secs(3), POLL, || {
            topo.status(&pin).ok().filter(|s| registered(s).len() == 2)
        })
        .context("the agent and the swarm member did not both register")?;
        sleep(5 * P);
        let status = topo.status(&pin)?;
        let backends = &first_group(&status).backends;
        let find = |addr: &str| {
            backends
                .iter()
                .find(|b| b.address.to_string() == addr)
                .with_context(|| format!("{addr} not registered"))
        };
        let (a, s) = (find(&agent_addr)?, find(&member)?);
        println!("agent: {a:?}\nswarm: {s:?}");
        ensure!(
            (a.weight, &a.state, a.misses) == (s.weight, &s.state, s.misses),
            "entries differ"
        );
        ensure!(
            a.announcements.abs_diff(s.announcements) <= 1,
            "announcements out of step"
        );
        ensure!(a.sequence > 0 && s.sequence > 0, "a plain announcement");
        for refused in [
            Counter::AuthMissing,
            Counter::AuthBadTag,
            Counter::AuthReplay,
            Counter::AuthStale,
        ] {
            ensure!(counter(&status, refused)? == 0, "{} moved", refused.name());
        }
        ensure!(
            counter(&status, Counter::IgmpReport)? > 0,
            "no report counted"
        );
        Ok(())
    })
}

/// Backends (address, weight, state) and tables (size, digest).
type ForwardingView = (Vec<(String, u16, String)>, Vec<(u32, String)>);

/// What must be equal between two LBs that see the same backends: the
/// backends with their weights and states, and each service's table (its
/// size and the digest of its entries).
fn forwarding_view(status: &StatusReport) -> ForwardingView {
    let mut backends: Vec<(String, u16, String)> = first_group(status)
        .backends
        .iter()
        .map(|b| (b.address.to_string(), b.weight, b.state.clone()))
        .collect();
    backends.sort();
    let tables = status
        .services
        .iter()
        .map(|s| (s.table_size, s.table_digest.clone()))
        .collect();
    (backends, tables)
}

/// Two LBs on one segment, nothing shared but the protocol, build byte
/// for byte the same tables: with three backends, after a fourth joins,
/// after one drains and after one leaves.
#[test]
fn two_lbs_that_see_the_same_backends_build_identical_tables() -> anyhow::Result<()> {
    const LB2: usize = 1;
    with_topology(6, Bridge::Flooding, |topo| {
        let vip = topo.segment_address(100).to_string();
        let mut args = FAST_TIMERS.to_vec();
        args.extend(["--vip", &vip, "--service", "tcp:80"]);
        let (_lb1, pin1) = topo.start_lb(LB, "lb1", &args)?;
        let (_lb2, pin2) = topo.start_lb(LB2, "lb2", &args)?;
        let mut agents = std::collections::BTreeMap::new();
        let mut start_agent = |host: usize, weight: &str| -> anyhow::Result<()> {
            let agent = topo.spawn(
                host,
                &format!("agent{host}"),
                "backend-agent",
                &["--iface", "eth0", "--vip", &vip, "--weight", weight],
            )?;
            agents.insert(host, agent);
            Ok(())
        };
        for (host, weight) in [(2, "100"), (3, "200"), (4, "300")] {
            start_agent(host, weight)?;
        }
        let agreed = |backends: usize, what: &str| -> anyhow::Result<()> {
            let view = wait_for(Duration::from_secs(5), POLL, || {
                let one = forwarding_view(&topo.status(&pin1).ok()?);
                let two = forwarding_view(&topo.status(&pin2).ok()?);
                (one == two && one.0.len() == backends).then_some(one)
            })
            .with_context(|| format!("{what}: the LBs' tables differ"))?;
            println!("{what}: both LBs {:?}, table {:?}", view.0, view.1);
            Ok(())
        };
        agreed(3, "three backends")?;
        start_agent(5, "100")?;
        agreed(4, "a fourth joined")?;
        agents[&3].signal(libc::SIGUSR1);
        topo.wait_backends(&pin1, "draining", 1, Duration::from_secs(3))?;
        agreed(4, "one draining")?;
        agents[&4].signal(libc::SIGTERM);
        agreed(3, "one left")?;
        Ok(())
    })
}

/// Two LBs with tables large enough to be patched (3,000 backends: 524,287
/// entries) end with byte-identical tables after registration and after
/// an agent joins, whatever order the announcements reached each in: the
/// full population replaces the patches.
#[test]
fn two_lbs_that_patch_large_tables_end_byte_identical() -> anyhow::Result<()> {
    const LB2: usize = 2;
    const AGENT: usize = 3;
    const FIRST: usize = 3_000;
    with_topology(4, Bridge::Flooding, |topo| {
        let vip = topo.segment_address(100).to_string();
        // The default timers (P = 1 s), and a group declared dead only
        // after 10 silent periods: the debug build's first passes over 3,000
        // new IPIP backends (a next hop probed and a line logged for each)
        // stall the control loop, and one swarm answering two LBs sends one
        // report per round, which a stalled period can miss (what the
        // group's liveness does then is tested elsewhere, with agents).
        let args = [
            "--vip",
            vip.as_str(),
            "--service",
            "tcp:80",
            "--robustness",
            "10",
        ];
        let (lb1, pin1) = topo.start_lb(LB, "lb1", &args)?;
        let (lb2, pin2) = topo.start_lb(LB2, "lb2", &args)?;
        let [a, b, _, _] = topo.host(LB).addr.octets();
        let agreed = |backends: usize, what: &str| -> anyhow::Result<Duration> {
            let start = Instant::now();
            let view = wait_for(Duration::from_secs(10), POLL, || {
                let one = forwarding_view(&topo.status(&pin1).ok()?);
                let two = forwarding_view(&topo.status(&pin2).ok()?);
                let large = one.1.iter().all(|(size, _)| *size > 262_139);
                (one == two && one.0.len() == backends && large).then_some(one)
            })
            .with_context(|| {
                let view = |pin| topo.status(pin).map(|s| forwarding_view(&s));
                let tables = |v: anyhow::Result<ForwardingView>| v.map(|v| (v.0.len(), v.1));
                format!(
                    "{what}: the LBs' tables differ: {:?} and {:?}",
                    tables(view(&pin1)),
                    tables(view(&pin2))
                )
            })?;
            println!("{what}: both LBs' tables {:?}", view.1);
            Ok(start.elapsed())
        };
        let first = Ipv4Addr::new(a, b, 128, 1).to_string();
        let count = FIRST.to_string();
        let _swarm = topo.spawn(SWARM_HOST, "swarm", "swarm", &["eth0", &first, &count])?;
        let took = agreed(FIRST, "3,000 registered")?;
        println!(
            "tables equal {} ms after both listed 3,000 or sooner",
            took.as_millis()
        );
        let _agent = topo.spawn(
            AGENT,
            "agent",
            "backend-agent",
            &["--iface", "eth0", "--vip", &vip],
        )?;
        let took = agreed(FIRST + 1, "an agent joined")?;
        println!(
            "tables equal {} ms after the join was seen or sooner",
            took.as_millis()
        );
        let logs = lb1.log_text() + &lb2.log_text();
        ensure!(
            logs.contains("how=\"patch\"") || logs.contains("how=patch"),
            "no table was patched: {}",
            logs.lines()
                .filter(|l| l.contains("rebuilt"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        Ok(())
    })
}
