//! End-to-end registration (SPEC 5) on a bridge: one LB, three agents, the
//! real XDP program, real IGMP; with the bridge's IGMP snooping on and off.
//! Prints the measured registration and removal latencies.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use lb_tests::{FAST_TIMERS, Proc, StatusReport, Topology, first_group, registered, wait_for};

const P: Duration = Duration::from_millis(200);
const T: Duration = Duration::from_millis(400);
const N: u32 = 3;
const R: u32 = 2;
const POLL: Duration = Duration::from_millis(20);

fn start_lb(
    topo: &Topology,
    host: usize,
    name: &str,
) -> anyhow::Result<(Proc, std::path::PathBuf)> {
    let mut extra = FAST_TIMERS.to_vec();
    extra.extend(["--robustness", "2"]);
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

/// Waits until `pred` holds on the LB's status; returns the time it took.
fn until(
    topo: &Topology,
    pin: &std::path::Path,
    limit: Duration,
    what: &str,
    pred: impl Fn(&StatusReport) -> bool,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    wait_for(limit, POLL, || topo.status(pin).ok().filter(|s| pred(s)))
        .with_context(|| format!("{what}: not within {limit:?}"))?;
    Ok(start.elapsed())
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

fn scenario(snooping: bool) -> anyhow::Result<()> {
    let topo = Topology::new(6, snooping)?;
    topo.run(|topo| scenario_on(topo, snooping))
}

fn scenario_on(topo: &Topology, snooping: bool) -> anyhow::Result<()> {
    let mode = if snooping {
        "snooping on"
    } else {
        "snooping off"
    };
    let addr = |i: usize| topo.host(i).addr.to_string();
    let (mut lb, pin) = start_lb(topo, 0, "lb1")?;

    // 1. Three agents register within 2 P of their start.
    let started = Instant::now();
    let mut agents: Vec<Proc> = (1..=3)
        .map(|i| start_agent(topo, i, &format!("agent{i}")))
        .collect::<anyhow::Result<_>>()?;
    let mut latencies = Vec::new();
    for i in 1..=3 {
        let a = addr(i);
        until(
            topo,
            &pin,
            2 * P + Duration::from_secs(2),
            "registration",
            |s| registered(s).contains(&a),
        )?;
        latencies.push(ms(started.elapsed()));
    }
    println!("[{mode}] registration latency after agent start (ms): {latencies:?}");
    for (i, l) in latencies.iter().enumerate() {
        ensure!(
            *l <= ms(2 * P),
            "agent{} registered after {l} ms, more than 2 P",
            i + 1
        );
    }

    // 2. SIGSTOP: agent1 frozen for good is removed after its misses run out,
    //    not before; agent2 frozen for 2 T and thawed is never removed.
    let frozen = Instant::now();
    agents[0].signal(libc::SIGSTOP);
    agents[1].signal(libc::SIGSTOP);
    let (a1, a2) = (addr(1), addr(2));
    let mut thawed = false;
    let mut a2_max_misses = 0;
    let removal_limit = T * (N + 1) + P + Duration::from_millis(300);
    let removed_after = loop {
        let s = topo.status(&pin)?;
        let a2_entry = first_group(&s)
            .backends
            .iter()
            .find(|b| b.address.to_string() == a2);
        let Some(a2_entry) = a2_entry else {
            bail!("thawed agent2 was removed")
        };
        a2_max_misses = a2_max_misses.max(a2_entry.misses);
        if !thawed && frozen.elapsed() >= 2 * T {
            agents[1].signal(libc::SIGCONT);
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
    // The thawed agent stays through one more full removal window.
    let watch = Instant::now();
    while watch.elapsed() < T * (N + 1) {
        ensure!(
            registered(&topo.status(&pin)?).contains(&a2),
            "thawed agent2 was removed"
        );
        std::thread::sleep(POLL);
    }
    agents[0].signal(libc::SIGCONT);
    let back = until(
        topo,
        &pin,
        2 * P + Duration::from_secs(1),
        "re-registration after SIGCONT",
        |s| registered(s).contains(&a1),
    )?;
    println!(
        "[{mode}] thawed agent1 re-registered {} ms after SIGCONT",
        ms(back)
    );

    // 3. SIGTERM: removed within one P, agent exits 0.
    let a3 = addr(3);
    agents[2].signal(libc::SIGTERM);
    let gone = until(
        topo,
        &pin,
        P + Duration::from_secs(1),
        "removal after SIGTERM",
        |s| !registered(s).contains(&a3),
    )?;
    println!("[{mode}] agent3 removed {} ms after SIGTERM", ms(gone));
    ensure!(gone <= P, "agent3 removed after {gone:?}, more than one P");
    ensure!(
        agents[2].wait_exit(Duration::from_secs(5))? == 0,
        "agent3 did not exit 0"
    );

    // 4. All agents gone: the group dies and queries stop (counted twice).
    let ended = Instant::now();
    terminate(agents[..2].iter_mut())?;
    until(
        topo,
        &pin,
        Duration::from_secs(2),
        "every backend removed",
        |s| registered(s).is_empty(),
    )?;
    let dead = until(
        topo,
        &pin,
        (R + 2) * P + Duration::from_secs(1),
        "group declared dead",
        |s| first_group(s).state == "dead",
    )?;
    println!(
        "[{mode}] group dead {} ms after the last agent left (R = {R}, P = {} ms)",
        ms(ended.elapsed()),
        ms(P)
    );
    let _ = dead;
    let sent_at_death = first_group(&topo.status(&pin)?).queries_sent;
    let on_wire = queries_on_wire(topo, "p1", 5 * P)?;
    let sent_later = first_group(&topo.status(&pin)?).queries_sent;
    println!(
        "[{mode}] while dead for 5 P: {} queries counted by the LB, {on_wire} seen on the wire",
        sent_later - sent_at_death
    );
    ensure!(
        sent_later == sent_at_death && on_wire == 0,
        "queries went on while the group was dead"
    );

    // 5. A new agent revives the group and registers within 2 P.
    let revive = Instant::now();
    let mut agent4 = start_agent(topo, 4, "agent4")?;
    let a4 = addr(4);
    let reg = until(
        topo,
        &pin,
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
    let revived_on_wire = queries_on_wire(topo, "p1", 5 * P)?;
    ensure!(
        revived_on_wire >= 3,
        "only {revived_on_wire} queries on the wire in 5 P after revival"
    );
    let _ = revive;

    // 6. A second LB on the same bridge registers the same backends.
    let mut more: Vec<Proc> = (1..=2)
        .map(|i| start_agent(topo, i, &format!("agent{i}b")))
        .collect::<anyhow::Result<_>>()?;
    let want = {
        let mut v = vec![addr(1), addr(2), addr(4)];
        v.sort();
        v
    };
    until(
        topo,
        &pin,
        Duration::from_secs(2),
        "lb1 sees three backends",
        |s| registered(s) == want,
    )?;
    let lb2_start = Instant::now();
    let (mut lb2, pin2) = start_lb(topo, 5, "lb2")?;
    let both = until(
        topo,
        &pin2,
        2 * P + Duration::from_secs(2),
        "lb2 registers the same backends",
        |s| registered(s) == want,
    )?;
    println!(
        "[{mode}] second LB registered all three backends {} ms after its status came up ({} ms after start)",
        ms(both),
        ms(lb2_start.elapsed())
    );
    ensure!(both <= 2 * P, "second LB took {both:?}");
    ensure!(
        registered(&topo.status(&pin)?) == want,
        "lb1 lost backends when lb2 started"
    );

    // Clean shutdown: agents leave both LBs, the LBs exit 0 and unpin.
    terminate(more.iter_mut().chain(std::iter::once(&mut agent4)))?;
    until(
        topo,
        &pin2,
        P + Duration::from_secs(1),
        "lb2 empty after LEAVING",
        |s| registered(s).is_empty(),
    )?;
    for (proc_, pin) in [(&mut lb, &pin), (&mut lb2, &pin2)] {
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

#[test]
fn registration_with_snooping() {
    scenario(true).unwrap();
}

#[test]
fn registration_without_snooping() {
    scenario(false).unwrap();
}
