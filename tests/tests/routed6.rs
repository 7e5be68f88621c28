//! IP-in-IP with IPv6 beyond one segment (protocol §9): one backend on the
//! LB's segment (layer 2) and two behind a router (IP-in-IP of the
//! backends' family, their agents stripping it), in every mix of VIP and
//! group family: an IPv6 VIP of IPv6 backends (ip6ip6), an IPv4 VIP of
//! IPv6 backends (IPv4 in IPv6), an IPv6 VIP of IPv4 backends (IPv6 in
//! IPv4). Each spreads connections by weight without error and carries
//! 1 MB each way, first with the client's offloads at their defaults (its
//! super-packets through the GSO program) and then without TSO and GSO
//! (wire-sized frames: path MTU discovery through XDP's ICMPv6 Packet Too
//! Big or "fragmentation needed").
use std::{net::IpAddr, time::Duration};

use anyhow::{Context, ensure};
use lb_tests::{
    Bridge, Counter, FAST_TIMERS, Proc, Topology, check_super_packets_wrapped, counter,
    first_group, wait_for,
};
use serde_json::Value;

const LB: usize = 0;
const CLIENT: usize = 1;
const ROUTER: usize = 2;
const ON_SEGMENT: usize = 3;
const GROUP6: &str = "ff15::4c42";
const GROUP4: &str = "239.192.0.1";
const MEGABYTE: u32 = 1 << 20;
const SPREAD: u32 = 2400;

fn name(host: usize) -> String {
    format!("b{host}")
}

/// Serves TCP port 80 of a VIP of the family `vip_ipv6` says from a group
/// of the family `group_ipv6` says: one backend on the segment, two behind
/// the router.
fn serves_through_a_router(vip_ipv6: bool, group_ipv6: bool) -> anyhow::Result<()> {
    let mut topo = Topology::new(4, Bridge::Flooding)?;
    let routed = [
        topo.add_subnet(ROUTER, 1, 1)?[0],
        topo.add_subnet(ROUTER, 2, 1)?[0],
    ];
    topo.run(|topo| {
        for host in [LB, CLIENT, ROUTER, ON_SEGMENT] {
            topo.ipv6(host)?;
        }
        for (id, host) in (1..).zip(routed) {
            topo.ipv6_subnet(ROUTER, id, &[host])?;
        }
        topo.route_through(ROUTER, &[LB, CLIENT])?;
        topo.route6_through(ROUTER, &[LB, CLIENT])?;
        let group = if group_ipv6 { GROUP6 } else { GROUP4 };
        let _router =
            topo.start_mrouter(ROUTER, group.parse::<IpAddr>()?, &["eth0", "s1", "s2"])?;
        let vip: IpAddr = if vip_ipv6 {
            let [a, b, c, ..] = topo.ipv6_address(0).segments();
            std::net::Ipv6Addr::new(a, b, c, 0, 0, 0, 0, 0x100).into()
        } else {
            topo.segment_address(100).into()
        };
        let vip_text = vip.to_string();
        let mut args = FAST_TIMERS.to_vec();
        args.extend([
            "--group",
            group,
            "--ttl",
            "4",
            "--vip",
            &vip_text,
            "--service",
            "tcp:80",
        ]);
        let (lb, pin) = topo.start_lb(LB, "lb", &args)?;
        let hosts = [ON_SEGMENT, routed[0], routed[1]];
        let mut procs: Vec<Proc> = Vec::new();
        for host in hosts {
            procs.push(topo.start_server(host, "[::]:80")?);
            procs.push(topo.spawn(
                host,
                &format!("agent{host}"),
                "backend-agent",
                &["--iface", "eth0", "--group", group, "--vip", &vip_text],
            )?);
        }
        wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
            let status = topo.status(&pin).ok()?;
            (first_group(&status).backends.len() == 3).then_some(())
        })
        .with_context(|| format!("3 backends did not register: {}", lb.log_text()))?;
        topo.wait_tables(&pin)?;
        let family = |ipv6| if ipv6 { "IPv6" } else { "IPv4" };
        let case = format!("{} VIP, {} backends", family(vip_ipv6), family(group_ipv6));
        let target = std::net::SocketAddr::new(vip, 80).to_string();
        let (names, errors) = topo.spread(CLIENT, &target, SPREAD)?;
        println!("{case}: {SPREAD} connections {names:?}, {errors} errors");
        ensure!(errors == 0, "{case}: {errors} connections failed");
        for host in hosts {
            let got = names.get(&name(host)).copied().unwrap_or(0) as f64;
            let want = f64::from(SPREAD) / 3.0;
            ensure!(
                (got - want).abs() <= 0.15 * want,
                "{case}: {} got {got}, want {want:.0} +-15%",
                name(host)
            );
        }
        let status = topo.status(&pin)?;
        let (l2, wrapped) = (
            counter(&status, Counter::VipNewFlow)?,
            counter(&status, Counter::IpipNewFlow)?,
        );
        println!("{case}: new flows {l2} at layer 2, {wrapped} in IP-in-IP");
        ensure!(
            l2 >= u64::from(SPREAD) / 4 && wrapped >= u64::from(SPREAD) / 2,
            "{case}: layer 2 {l2}, IP-in-IP {wrapped}"
        );
        large_transfers(
            topo,
            &target,
            &routed,
            (&case, "offloads at their defaults"),
        )?;
        let status = topo.status(&pin)?;
        check_super_packets_wrapped(&status, &case)?;
        topo.exec_program(
            CLIENT,
            "ethtool",
            &["-K", "eth0", "tso", "off", "gso", "off"],
        )?;
        large_transfers(topo, &target, &routed, (&case, "TSO and GSO off"))?;
        let status = topo.status(&pin)?;
        ensure!(
            counter(&status, Counter::IpipTooBig)? > 0,
            "{case}: the upload never met XDP's ICMP answer (path MTU discovery)"
        );
        ensure!(
            counter(&status, Counter::IpipNoNextHop)? == 0 && status.next_hop_errors.is_empty(),
            "{case}: next-hop errors {:?}",
            status.next_hop_errors
        );
        drop(procs);
        Ok(())
    })
}

/// A 1 MB upload and a 1 MB download through `target`, timed; the upload
/// repeated (at most 10 times: a new connection lands on a routed backend
/// two times in three) until one went through the router, its backend one
/// of `routed`. (A download's data leaves its backend straight to the
/// client: only its ACKs pass the LB.)
fn large_transfers(
    topo: &Topology,
    target: &str,
    routed: &[usize],
    (case, how): (&str, &str),
) -> anyhow::Result<()> {
    let routed_names: Vec<String> = routed.iter().map(|&h| name(h)).collect();
    let mut through_router = false;
    for _ in 0..10 {
        let (v, took) = transfer(topo, "upload", target)?;
        let answer = v["answer"].as_str().unwrap_or_default();
        println!("{case}, {how}: 1 MB upload in {} ms: {v}", took.as_millis());
        ensure!(
            answer.ends_with(&format!(" received {MEGABYTE}")),
            "{case}, {how}: the upload failed: {v}"
        );
        if routed_names
            .iter()
            .any(|n| answer.starts_with(&format!("{n} ")))
        {
            through_router = true;
            break;
        }
    }
    ensure!(
        through_router,
        "{case}, {how}: no upload of 10 went through the router"
    );
    let (v, took) = transfer(topo, "download", target)?;
    println!(
        "{case}, {how}: 1 MB download in {} ms: {v}",
        took.as_millis()
    );
    ensure!(
        v["bytes"].as_u64() == Some(u64::from(MEGABYTE)),
        "{case}, {how}: the download failed: {v}"
    );
    Ok(())
}

/// One `http-probe` transfer of 1 MB (`upload` or `download`): its JSON
/// line and how long it took.
fn transfer(topo: &Topology, mode: &str, target: &str) -> anyhow::Result<(Value, Duration)> {
    let started = std::time::Instant::now();
    let out = topo.exec(CLIENT, "http-probe", &[mode, target, &MEGABYTE.to_string()])?;
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().context("http-probe printed nothing")?;
    Ok((serde_json::from_str(line)?, took))
}

#[test]
fn an_ipv6_vip_of_ipv6_backends_through_a_router() -> anyhow::Result<()> {
    serves_through_a_router(true, true)
}

#[test]
fn an_ipv4_vip_of_ipv6_backends_through_a_router() -> anyhow::Result<()> {
    serves_through_a_router(false, true)
}

#[test]
fn an_ipv6_vip_of_ipv4_backends_through_a_router() -> anyhow::Result<()> {
    serves_through_a_router(true, false)
}
