//! `cargo xtask demo`: a bridge, one LB and three backends in network
//! namespaces of its own; backends register, serve, leave and freeze on
//! screen, and everything is removed at the end.
use std::{
    process::Command,
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::Context;
use lb_tests::{Bridge, Proc, Topology, first_group, registered, wait_for};

use crate::{cargo, root, setup::setup};

const LB_ARGS: [&str; 8] = [
    "--query-interval",
    "500ms",
    "--timeout",
    "1s",
    "--max-misses",
    "2",
    "--robustness",
    "2",
];

fn banner(text: &str) {
    println!("\n=== {text}");
}

fn show_status(pin: &str) -> anyhow::Result<()> {
    let out = Command::new(lb_tests::bin("lb-user"))
        .args(["status", "--pin-path", pin])
        .output()
        .context("running lb-user status")?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

pub fn demo() -> anyhow::Result<()> {
    setup()?;
    cargo(&["build", "--release", "--bins"], &[])?;
    // SAFETY: single-threaded at this point; lb_tests reads it when spawning.
    unsafe { std::env::set_var("XDP_LB_BIN_DIR", root().join("target/release")) };

    banner("building a bridge with 5 hosts in network namespaces: LB, three backends, a client");
    let topo = Topology::new(5, Bridge::Snooping)?;
    for h in &topo.hosts {
        println!("  {} {}", h.netns, h.addr);
    }
    let result = topo.run(story);
    banner("cleaning up: processes stop, namespaces and bpffs are removed");
    result
}

/// The client's host.
const CLIENT: usize = 4;

/// 300 short HTTP connections from the client to the VIP; prints who answered.
fn serve(topo: &Topology, vip: &str) -> anyhow::Result<()> {
    let out = topo.exec(
        CLIENT,
        "http-probe",
        &["spread", &format!("{vip}:80"), "300"],
    )?;
    println!(
        "  client -> {vip}:80, 300 connections, answered by: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(())
}

fn story(topo: &Topology) -> anyhow::Result<()> {
    let vip = topo.segment_address(100).to_string();
    let mut args = vec!["--vip", &vip, "--service", "tcp:80"];
    args.extend(LB_ARGS);
    banner(&format!(
        "starting the LB on {} (P=500ms, T=1s, N=2)",
        topo.host(0).addr
    ));
    println!(
        "  lb-user run --iface eth0 --pin-path ... {}",
        args.join(" ")
    );
    let (mut lb, pin) = topo.start_lb(0, "lb", &args)?;
    let pin_str = pin.to_str().context("pin path")?.to_owned();

    let _servers = topo.start_servers(&[1, 2, 3])?;
    banner(
        "starting backend-agent (weights 100, 200, 300) on three backends; nothing is configured on the LB",
    );
    let started = Instant::now();
    let mut agents: Vec<Proc> = (1..=3)
        .map(|i| {
            let weight = (i * 100).to_string();
            topo.spawn(
                i,
                &format!("agent{i}"),
                "backend-agent",
                &["--iface", "eth0", "--weight", &weight, "--vip", &vip],
            )
        })
        .collect::<anyhow::Result<_>>()?;
    wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        topo.status(&pin).ok().filter(|s| registered(s).len() == 3)
    })
    .context("backends did not register")?;
    println!(
        "  all three registered {} ms after their agents started",
        started.elapsed().as_millis()
    );
    // Let the control plane's next pass log the registrations too.
    sleep(Duration::from_millis(300));
    show_status(&pin_str)?;
    banner(
        "serving: XDP spreads the client's connections by weight (Maglev, direct server return)",
    );
    serve(topo, &vip)?;

    banner(&format!(
        "backend {} stops cleanly (SIGTERM): its LEAVING removes it at once",
        topo.host(3).addr
    ));
    agents[2].signal(libc::SIGTERM);
    agents[2].wait_exit(Duration::from_secs(5))?;
    sleep(Duration::from_millis(200));
    show_status(&pin_str)?;
    serve(topo, &vip)?;

    let frozen = topo.host(2).addr.to_string();
    banner(&format!(
        "backend {frozen} freezes (SIGSTOP): it misses heartbeats and is removed after N+1 = 3 timeouts"
    ));
    agents[1].signal(libc::SIGSTOP);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        let status = topo.status(&pin)?;
        let entry = first_group(&status)
            .backends
            .iter()
            .find(|b| b.address.to_string() == frozen);
        match entry {
            Some(e) => println!(
                "  t={:>5} ms  {frozen}: last seen {} ms ago, misses {}",
                start.elapsed().as_millis(),
                e.last_seen_ms,
                e.misses
            ),
            None => {
                println!(
                    "  t={:>5} ms  {frozen}: removed",
                    start.elapsed().as_millis()
                );
                break;
            }
        }
        sleep(Duration::from_millis(500));
    }
    banner(&format!(
        "backend {frozen} thaws (SIGCONT): it answers the next query and registers again"
    ));
    agents[1].signal(libc::SIGCONT);
    wait_for(Duration::from_secs(3), Duration::from_millis(20), || {
        topo.status(&pin)
            .ok()
            .filter(|s| registered(s).contains(&frozen))
    })
    .context("the thawed backend did not come back")?;
    sleep(Duration::from_millis(300));
    show_status(&pin_str)?;

    banner("every backend leaves: the group goes silent, is declared dead and queries stop");
    for agent in &agents[..2] {
        agent.signal(libc::SIGTERM);
    }
    wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
        topo.status(&pin)
            .ok()
            .filter(|s| first_group(s).state == "dead")
    })
    .context("the group was not declared dead")?;
    show_status(&pin_str)?;

    banner("LB log");
    lb.signal(libc::SIGTERM);
    lb.wait_exit(Duration::from_secs(5))?;
    print!("{}", lb.log_text());
    Ok(())
}
