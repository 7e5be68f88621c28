//! Starting the agent: its sockets opened (or a predecessor's adopted),
//! the group joined, the decapsulation program attached, the VIP set up.
use std::net::{IpAddr, SocketAddr, UdpSocket};

use anyhow::Context;
use lb_host::{routed_socket::RoutedSocket, service_manager, system};
use tokio::io::unix::AsyncFd;
use tracing::{info, warn};

use crate::{
    agent::Agent,
    args::Args,
    decap::Decap,
    handover::{self, Inherited, KeptVip},
    health::Health,
    membership::Membership,
    metrics::AgentMetrics,
    schedule::Schedule,
    state::AgentStatus,
};

/// What the direct-server-return setup changed, undone on drop: the VIP
/// on the loopback and the interface's ARP settings.
/// The VIP on the loopback, and for an IPv4 VIP the interface's ARP
/// settings that leave ARP for it to the LB.
pub struct VipSetup {
    pub addr: system::AddedAddress,
    pub arp: Option<[system::SysctlOverride; 2]>,
}

/// The membership socket (IGMP or MLD) and the routed one.
type Sockets = (Membership, RoutedSocket);

/// Opens the membership socket (IGMP or MLD) and the routed socket, and
/// joins the group.
fn open_sockets(args: &Args, ifindex: u32) -> anyhow::Result<Sockets> {
    let membership = Membership::open(args.iface(), ifindex, args.group, args.igmp_ttl())
        .context("opening the raw membership socket (IGMP, or ICMPv6 for MLD)")?;
    let routed = RoutedSocket::member(args.group, args.port, ifindex, args.routed_ttl())
        .with_context(|| {
            format!(
                "opening the UDP socket for routed queries on {}",
                SocketAddr::new(args.group, args.port)
            )
        })?;
    membership
        .join(args.group)
        .with_context(|| format!("joining {} on {}", args.group, args.iface()))?;
    Ok((membership, routed))
}

/// Takes over a predecessor's sockets, still members of the group (no
/// leave, no join), and empties the service manager's store: a crash from
/// now on leaves the group at once, as without a handover.
fn adopt_sockets(
    args: &Args,
    ifindex: u32,
    (membership, routed): (std::os::fd::OwnedFd, std::os::fd::OwnedFd),
) -> anyhow::Result<Sockets> {
    let membership = Membership::adopt(membership, ifindex, args.group, args.igmp_ttl())
        .context("adopting the predecessor's membership socket")?;
    let routed = RoutedSocket::adopt(routed, args.routed_ttl())
        .context("adopting the predecessor's routed socket")?;
    for name in [handover::MEMBERSHIP_SOCKET, handover::ROUTED_SOCKET] {
        if let Err(e) = service_manager::remove(name) {
            warn!("the service manager still holds the {name} socket: {e}");
        }
    }
    info!(group = %args.group, "adopted the predecessor's group membership (restart keeping state)");
    Ok((membership, routed))
}

/// Direct server return: the backend accepts VIP traffic on its loopback
/// and never answers ARP for an IPv4 VIP, which belongs to the LB (a host
/// does not answer Neighbour Solicitations for an IPv6 address on its
/// loopback: nothing to set, protocol §9). What a predecessor `kept` for
/// this VIP is taken over: removed and restored on this agent's stop.
pub fn set_up_vip(vip: IpAddr, iface: &str, kept: Option<&KeptVip>) -> anyhow::Result<VipSetup> {
    let kept = kept.filter(|k| k.addr == vip);
    let original = |value: fn(&KeptVip) -> &String| kept.map(|k| value(k).clone());
    let addr = system::AddedAddress::add(vip, "lo", kept.is_some_and(|k| k.added))?;
    let arp = if vip.is_ipv4() {
        Some([
            system::SysctlOverride::set_restoring(
                &format!("net/ipv4/conf/{iface}/arp_ignore"),
                "1",
                original(|k| &k.arp_ignore),
            )?,
            system::SysctlOverride::set_restoring(
                &format!("net/ipv4/conf/{iface}/arp_announce"),
                "2",
                original(|k| &k.arp_announce),
            )?,
        ])
    } else {
        None
    };
    Ok(VipSetup { addr, arp })
}

/// Joins the group and opens the sockets, or adopts a predecessor's
/// (`inherited`); the agent starts with no LB but those it inherits.
pub fn start(args: Args, key: Option<[u8; 16]>, inherited: Inherited) -> anyhow::Result<Agent> {
    let local = system::interface_addr_like(args.iface(), args.group)?;
    let ifindex = system::interface_index(args.iface())?;
    let record = inherited
        .record
        .filter(|r| r.group == args.group && r.port == args.port);
    let (membership, routed) = match inherited.sockets.filter(|_| record.is_some()) {
        Some(sockets) => adopt_sockets(&args, ifindex, sockets)?,
        None => open_sockets(&args, ifindex)?,
    };
    let udp = UdpSocket::bind(SocketAddr::new(local, 0))
        .with_context(|| format!("binding a UDP socket to {local}"))?;
    info!(iface = %args.iface(), %local, group = %args.group, port = args.port, weight = args.weight, "agent is a member of the group");
    let checks: Vec<String> = args.checks.iter().map(ToString::to_string).collect();
    if !checks.is_empty() {
        info!(?checks, interval = %humantime::format_duration(args.check_interval), rise = args.rise, fall = args.fall, "service checks: DOWN until they pass {} times in a row", args.rise);
    }
    let state = AgentStatus {
        pid: std::process::id(),
        iface: args.iface().to_owned(),
        group: Some(args.group),
        service: if checks.is_empty() {
            "unchecked"
        } else {
            "down"
        }
        .to_owned(),
        checks,
        ..AgentStatus::default()
    };
    // Only a backend that serves a VIP (direct server return) can be
    // sent IP-in-IP; it accepts it only from the LBs it learns.
    let kept_link = handover::link_path(&args.pin_path, args.iface())?;
    let decap = if args.vip.is_some() {
        let decap = Decap::attach(args.iface(), local, &kept_link)?;
        info!(iface = %args.iface(), "IP-in-IP decapsulation attached (tc ingress): IP-in-IP from the LBs that query this agent is stripped");
        Some(decap)
    } else {
        // A predecessor's kept program goes with its VIP.
        let _ = std::fs::remove_file(&kept_link);
        None
    };
    let metrics = AgentMetrics::default();
    metrics.service(&state.service, false);
    let mut agent = Agent {
        decap,
        metrics,
        health: (!args.checks.is_empty()).then(|| Health::new(args.rise, args.fall)),
        args,
        local,
        // SAFETY: the AsyncFd owns the socket, so the fd stays open while registered.
        membership: unsafe { AsyncFd::register(membership) }
            .map_err(|e| anyhow::anyhow!("registering the membership socket: {e}"))?,
        // SAFETY: as above.
        routed: unsafe { AsyncFd::register(routed) }
            .map_err(|e| anyhow::anyhow!("registering the routed query socket: {e}"))?,
        udp,
        schedule: Schedule::default(),
        last_sequence: 0,
        registered_unix_ms: record
            .as_ref()
            .and_then(|r| r.registered_unix_ms)
            .unwrap_or_else(crate::agent::unix_ms),
        draining: false,
        last_failure: None,
        state,
        key,
    };
    for lb in record.map(|r| r.lbs).unwrap_or_default() {
        agent.schedule.know(lb);
        agent.learn_lb(lb);
    }
    agent.publish();
    // The kernel's join report revives a dead group on the LB's
    // segment, but never crosses a router: an unsolicited routed report
    // does, so an LB whose group died before any backend came hears of
    // this one (protocol §5.4).
    if let Err(e) = agent.report(true) {
        warn!("sending the first membership report failed: {e}");
    }
    Ok(agent)
}
