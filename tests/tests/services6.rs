//! IPv6 services end to end (protocol §9) on one bridge, at layer 2: an
//! IPv6 VIP served by three IPv6 backends (spread by weight, a leaving
//! backend's share moving, established connections staying, DRAINING),
//! and the mixed families (an IPv4 VIP served by IPv6 backends beside an
//! IPv6 VIP served by IPv4 backends). Real XDP_TX, real direct server
//! return, real TCP over IPv6; offloads at their defaults.
use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use anyhow::{Context, ensure};
use lb_tests::{
    Bridge, Counter, FAST_TIMERS, Proc, StatusReport, Topology, counter, first_answer, wait_for,
    with_topology,
};
use serde_json::Value;

const POLL: Duration = Duration::from_millis(20);
const LB: usize = 0;
const GROUP6: &str = "ff15::4c42";
const GROUP4: &str = "239.192.0.1";

fn name(host: usize) -> String {
    format!("b{host}")
}

/// The VIP `last` of the topology's IPv6 segment.
fn vip6(topo: &Topology, last: u16) -> std::net::Ipv6Addr {
    let [a, b, c, ..] = topo.ipv6_address(0).segments();
    std::net::Ipv6Addr::new(a, b, c, 0, 0, 0, 0, last)
}

/// Checks `names` against `weights` (host, weight) within 15%.
fn within_weights(names: &BTreeMap<String, u64>, weights: &[(usize, u16)]) -> anyhow::Result<()> {
    let total: u64 = names.values().sum();
    let weight_sum: u64 = weights.iter().map(|(_, w)| u64::from(*w)).sum();
    for (host, weight) in weights {
        let want = total as f64 * f64::from(*weight) / weight_sum as f64;
        let got = names.get(&name(*host)).copied().unwrap_or(0) as f64;
        ensure!(
            (got - want).abs() <= 0.15 * want,
            "{}: {got} connections, want {want:.0} +-15% ({names:?})",
            name(*host)
        );
    }
    Ok(())
}

/// A long-lived connection from `client`; returns it and the backend it
/// landed on.
fn hold(topo: &Topology, client: usize, target: SocketAddr) -> anyhow::Result<(Proc, String)> {
    let proc_ = topo.spawn(
        client,
        "hold",
        "http-probe",
        &["hold", &target.to_string(), "4"],
    )?;
    let first = first_answer(&proc_)?;
    Ok((proc_, first))
}

/// Waits for a hold connection to end; it must have stayed on `backend`.
fn stayed_on(mut proc_: Proc, backend: &str) -> anyhow::Result<()> {
    proc_.wait_exit(Duration::from_secs(15))?;
    let text = proc_.log_text();
    let v: Value = serde_json::from_str(text.lines().last().context("no output")?)?;
    ensure!(v["error"].is_null(), "connection failed: {}", v["error"]);
    ensure!(
        v["names"] == serde_json::json!([backend]),
        "moved between backends: {}",
        v["names"]
    );
    Ok(())
}

/// Starts the name server (IPv4 and IPv6) and an agent of `group` for
/// `vip` on `host`.
fn backend(
    topo: &Topology,
    host: usize,
    group: &str,
    vip: &str,
    weight: u16,
) -> anyhow::Result<(Proc, Proc)> {
    let server = topo.start_server(host, "[::]:80")?;
    let weight = weight.to_string();
    let agent = topo.spawn(
        host,
        &format!("agent{host}"),
        "backend-agent",
        &[
            "--iface", "eth0", "--group", group, "--vip", vip, "--weight", &weight,
        ],
    )?;
    Ok((server, agent))
}

/// The registered backends of `group` with `state`.
fn with_state(status: &StatusReport, group: &str, state: &str) -> Vec<String> {
    status
        .groups
        .iter()
        .filter(|g| g.group.to_string() == group)
        .flat_map(|g| g.backends.iter())
        .filter(|b| b.state == state)
        .map(|b| b.address.to_string())
        .collect()
}

fn wait_backends(
    topo: &Topology,
    pin: &std::path::Path,
    group: &str,
    state: &str,
    want: usize,
) -> anyhow::Result<()> {
    wait_for(Duration::from_secs(5), POLL, || {
        let status = topo.status(pin).ok()?;
        (with_state(&status, group, state).len() == want).then_some(())
    })
    .with_context(|| format!("{want} backends {state} in {group} not reached"))?;
    topo.wait_tables(pin)?;
    Ok(())
}

/// An LB on host 0 serving TCP port 80 of the IPv6 VIP `vip6(topo,
/// 0x100)` from GROUP6, every one of the topology's `hosts` given IPv6
/// first: the LB, its pins, the VIP and the LB's arguments (for a restart).
fn lb_serving_vip6(
    topo: &Topology,
    hosts: usize,
) -> anyhow::Result<(Proc, std::path::PathBuf, std::net::Ipv6Addr, Vec<String>)> {
    for i in 0..hosts {
        topo.ipv6(i)?;
    }
    let vip = vip6(topo, 0x100);
    let vip_text = vip.to_string();
    let mut args = FAST_TIMERS.to_vec();
    args.extend(["--group", GROUP6, "--vip", &vip_text, "--service", "tcp:80"]);
    let (lb, pin) = topo.start_lb(LB, "lb", &args)?;
    Ok((lb, pin, vip, args.into_iter().map(str::to_owned).collect()))
}

#[test]
fn an_ipv6_vip_is_served_by_three_ipv6_backends_at_layer_2() {
    const CLIENT: usize = 4;
    const BACKENDS: [(usize, u16); 3] = [(1, 100), (2, 200), (3, 300)];
    with_topology(5, Bridge::Snooping, |topo| {
        let (_lb, pin, vip, _) = lb_serving_vip6(topo, 5)?;
        let vip_text = vip.to_string();
        let mut procs = BTreeMap::new();
        for (host, weight) in BACKENDS {
            procs.insert(host, backend(topo, host, GROUP6, &vip_text, weight)?);
        }
        wait_backends(topo, &pin, GROUP6, "active", 3)?;
        let target = SocketAddr::new(vip.into(), 80);

        let (names, errors) = topo.spread(CLIENT, &target.to_string(), 3000)?;
        println!(
            "IPv6 VIP, 3 IPv6 backends at layer 2: 3000 connections {names:?}, {errors} errors"
        );
        ensure!(errors == 0, "{errors} connections failed");
        within_weights(&names, &BACKENDS)?;
        let status = topo.status(&pin)?;
        ensure!(
            counter(&status, Counter::VipNewFlow)? >= 3000,
            "new flows not counted: {:?}",
            status.counters
        );

        // A long-lived connection stays while another backend leaves, and
        // the leaver's share moves to the others.
        let (held, on) = hold(topo, CLIENT, target)?;
        let leaver = BACKENDS
            .iter()
            .map(|(h, _)| *h)
            .find(|h| name(*h) != on)
            .context("a backend other than the held one")?;
        procs
            .get(&leaver)
            .context("leaver")?
            .1
            .signal(libc::SIGTERM);
        wait_backends(topo, &pin, GROUP6, "active", 2)?;
        let (names, errors) = topo.spread(CLIENT, &target.to_string(), 2000)?;
        println!("after {} left: {names:?}, {errors} errors", name(leaver));
        ensure!(errors == 0, "{errors} connections failed after a leave");
        ensure!(
            !names.contains_key(&name(leaver)),
            "the leaver still served: {names:?}"
        );
        let rest: Vec<(usize, u16)> = BACKENDS.into_iter().filter(|(h, _)| *h != leaver).collect();
        within_weights(&names, &rest)?;
        stayed_on(held, &on)?;

        // DRAINING: the held connection stays, new ones go elsewhere.
        let (held, on) = hold(topo, CLIENT, target)?;
        let host = rest
            .iter()
            .map(|(h, _)| *h)
            .find(|h| name(*h) == on)
            .context("the held backend")?;
        procs.get(&host).context("agent")?.1.signal(libc::SIGUSR1);
        wait_backends(topo, &pin, GROUP6, "draining", 1)?;
        let (names, errors) = topo.spread(CLIENT, &target.to_string(), 100)?;
        println!("with {on} draining: {names:?}, {errors} errors");
        ensure!(
            errors == 0 && !names.contains_key(&on),
            "a draining backend got new connections: {names:?}"
        );
        stayed_on(held, &on)?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn an_ipv4_vip_with_ipv6_backends_beside_an_ipv6_vip_with_ipv4_backends() {
    const CLIENT: usize = 5;
    with_topology(6, Bridge::Snooping, |topo| {
        for i in 0..6 {
            topo.ipv6(i)?;
        }
        let vip4 = topo.segment_address(100);
        let vip6 = vip6(topo, 0x100);
        let config = topo.logs.join("mixed.toml");
        std::fs::write(
            &config,
            format!(
                "[[group]]\naddress = \"{GROUP6}\"\nvip = \"{vip4}\"\nservices = [\"tcp:80\"]\n\n\
                 [[group]]\naddress = \"{GROUP4}\"\nport = 2001\nvip = \"{vip6}\"\nservices = [\"tcp:80\"]\n"
            ),
        )?;
        let config = config.to_str().context("config path")?.to_owned();
        let mut args = FAST_TIMERS.to_vec();
        args.extend(["--config", &config]);
        let (_lb, pin) = topo.start_lb(LB, "lb", &args)?;
        let (vip4_text, vip6_text) = (vip4.to_string(), vip6.to_string());
        let mut procs = Vec::new();
        for host in [1, 2] {
            procs.push(backend(topo, host, GROUP6, &vip4_text, 100)?);
        }
        for host in [3, 4] {
            let server = topo.start_server(host, "[::]:80")?;
            let agent = topo.spawn(
                host,
                &format!("agent{host}"),
                "backend-agent",
                &["--iface", "eth0", "--group", GROUP4, "--port", "2001", "--vip", &vip6_text],
            )?;
            procs.push((server, agent));
        }
        wait_backends(topo, &pin, GROUP6, "active", 2)?;
        wait_backends(topo, &pin, GROUP4, "active", 2)?;
        for (vip, hosts, what) in [
            (std::net::IpAddr::from(vip4), [1, 2], "IPv4 VIP, IPv6 backends"),
            (vip6.into(), [3, 4], "IPv6 VIP, IPv4 backends"),
        ] {
            let (names, errors) = topo.spread(CLIENT, &SocketAddr::new(vip, 80).to_string(), 2000)?;
            println!("{what}: 2000 connections {names:?}, {errors} errors");
            ensure!(errors == 0, "{what}: {errors} connections failed");
            within_weights(&names, &[(hosts[0], 100), (hosts[1], 100)])?;
        }
        Ok(())
    })
    .unwrap();
}

/// lb-user restarted keeping state (SIGQUIT, then `run` again, adopting
/// the pins and the IPv6 connection table) while 200 keep-alive IPv6
/// connections make requests: none breaks, fails or moves.
#[test]
fn a_restart_under_ipv6_load_breaks_no_connection() {
    const CLIENT: usize = 4;
    with_topology(5, Bridge::Snooping, |topo| {
        let (mut lb, pin, vip, args) = lb_serving_vip6(topo, 5)?;
        let vip_text = vip.to_string();
        let mut procs = Vec::new();
        for host in 1..=3 {
            procs.push(backend(topo, host, GROUP6, &vip_text, 100)?);
        }
        wait_backends(topo, &pin, GROUP6, "active", 3)?;
        let target = SocketAddr::new(vip.into(), 80).to_string();
        let mut many = topo.spawn(CLIENT, "many", "http-probe", &["many", &target, "8"])?;
        std::thread::sleep(Duration::from_secs(2));
        lb.signal(libc::SIGQUIT);
        lb.wait_exit(Duration::from_secs(5))?;
        // The same pins: the new instance adopts the program, the maps
        // and the IPv6 connection table.
        let pin_text = pin.to_str().context("pin path")?.to_owned();
        let mut again_args = vec!["run", "--iface", "eth0", "--pin-path", &pin_text];
        again_args.extend(args.iter().map(String::as_str));
        let again = topo.spawn(LB, "lb-again", "lb-user", &again_args)?;
        wait_for(Duration::from_secs(10), POLL, || {
            again.log_text().contains("took over").then_some(())
        })
        .with_context(|| format!("the restarted LB did not adopt: {}", again.log_text()))?;
        ensure!(
            topo.status(&pin)?
                .groups
                .iter()
                .all(|g| g.backends.len() == 3),
            "the restarted LB lost backends"
        );
        many.wait_exit(Duration::from_secs(30))?;
        let log = many.log_text();
        let v: Value = serde_json::from_str(log.lines().last().context("no result")?)?;
        println!("IPv6 keep-alive connections across a restart keeping state: {v}");
        // Adopted, not registered again: three registrations in all.
        let registered = counter(&topo.status(&pin)?, Counter::AnnounceRegistered)?;
        ensure!(
            registered == 3,
            "{registered} registrations across the restart, not 3"
        );
        for key in ["broken_connections", "failures", "moved"] {
            ensure!(v[key].as_u64() == Some(0), "{key}: {v}");
        }
        ensure!(
            v["requests"].as_u64().unwrap_or(0) > 1000,
            "too few requests: {v}"
        );
        Ok(())
    })
    .unwrap();
}

/// Service checks over IPv6: of two IPv6 backends whose agents check
/// their servers, the one whose server stops is announced DOWN and gets
/// no new connection, while a connection held on the other stays.
#[test]
fn a_down_ipv6_backend_gets_no_new_connections() {
    const CLIENT: usize = 3;
    with_topology(4, Bridge::Snooping, |topo| {
        let (_lb, pin, vip, _) = lb_serving_vip6(topo, 4)?;
        let vip_text = vip.to_string();
        let checks = lb_tests::check_args("http://127.0.0.1:80/");
        let mut servers = BTreeMap::new();
        let mut agents = Vec::new();
        for host in [1, 2] {
            let server = topo.start_server(host, "[::]:80")?;
            servers.insert(host, server);
            let mut agent_args = vec!["--iface", "eth0", "--group", GROUP6, "--vip", &vip_text];
            agent_args.extend(checks.iter().map(String::as_str));
            agents.push(topo.spawn(host, &format!("agent{host}"), "backend-agent", &agent_args)?);
        }
        wait_backends(topo, &pin, GROUP6, "active", 2)?;
        let target = SocketAddr::new(vip.into(), 80);
        let (held, on) = hold(topo, CLIENT, target)?;
        let dead = [1, 2]
            .into_iter()
            .find(|h| name(*h) != on)
            .context("the other backend")?;
        servers.remove(&dead); // killed on drop
        wait_backends(topo, &pin, GROUP6, "down", 1)?;
        let (names, errors) = topo.spread(CLIENT, &target.to_string(), 200)?;
        println!(
            "{}'s server stopped, DOWN: {names:?}, {errors} errors",
            name(dead)
        );
        ensure!(errors == 0, "{errors} connections failed");
        ensure!(
            !names.contains_key(&name(dead)),
            "a DOWN backend got new connections: {names:?}"
        );
        stayed_on(held, &on)
    })
    .unwrap();
}
