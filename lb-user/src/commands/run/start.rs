//! Starting an instance: the program attached (or adopted), its maps
//! filled, the query sockets open, the services and VIPs in place.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use aya::programs::XdpMode;
use aya_log::EbpfLogger;
use lb_common::{ForwardingMode, mld::ALL_MLDV2_ROUTERS};
use lb_host::{
    igmp_socket::IgmpSocket,
    kernel,
    metrics_server::{MetricsEndpoint, StatusPage},
    mld_socket::MldSocket,
    routed_socket::RoutedSocket,
};
use lb_user::{
    control::{ControlParams, Controller},
    instance::{self, InstanceLock},
    loader::{self, LoadParams, load_program, xdp_program},
    maps::{GroupConfig, LbMaps},
    metrics::{self, ControlMetrics},
    next_hop::NextHops,
    queries::{MldQuerier, Queriers, RoutedQuerier},
    reach::{Reach, Segment},
    registrations::Registrations,
    status, system,
    tables::TableParams,
};
use tracing::{info, warn};

use super::{RunArgs, Settings};
use lb_user::config::Plan;

/// Removes the instance's pins (detaching XDP) when `run` ends, if armed:
/// from the start for a new instance, once running for an adopted one, so
/// that a failed takeover leaves the surviving data path alone.
pub(super) struct PinGuard {
    pub(super) dir: PathBuf,
    pub(super) armed: bool,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        if self.armed {
            instance::remove_pins(&self.dir);
        }
    }
}

/// A started instance: XDP attached, maps pinned, control plane ready.
pub(super) struct Running {
    pub(super) controller: Controller,
    pub(super) tick: Duration,
    /// Reads the records XDP logs (registrations, removals, a full list).
    pub(super) xdp_log: EbpfLogger<&'static dyn log::Log>,
    /// The loaded object: its program stays referenced while we run.
    pub(super) _ebpf: aya::Ebpf,
    /// Held for the life of the instance, released in reverse order.
    pub(super) vips: Vec<system::AddedAddress>,
    pub(super) pins: PinGuard,
    pub(super) _lock: InstanceLock,
}

/// The facts about `--iface` that `run` needs.
struct Interface {
    /// The LB's IPv4 address (unspecified when it serves only IPv6 groups
    /// and no service) and its prefix length.
    addr: Ipv4Addr,
    prefix_len: u8,
    /// The LB's IPv6 address (protocol §9), when it serves an IPv6 group,
    /// and its prefix length.
    addr6: Option<Ipv6Addr>,
    prefix6_len: u8,
    mac: [u8; 6],
    index: u32,
}

impl Interface {
    /// Reads `name`'s addresses of the families `plan` needs: an error
    /// names the missing one.
    fn read(name: &str, plan: &Plan) -> anyhow::Result<Self> {
        // A family's groups and VIPs need the interface's address of it:
        // the LB queries, answers and wraps from it.
        let vip_of = |v6: bool| plan.vips.iter().find(|vip| vip.is_ipv6() == v6).copied();
        let needs =
            |v6: bool| vip_of(v6).is_some() || plan.groups.iter().any(|g| g.group.is_ipv6() == v6);
        // With a VIP of the family, the error names it.
        let about = |v6: bool| {
            move |e: system::SystemError| match vip_of(v6) {
                Some(vip) => anyhow::anyhow!("VIP {vip}: {e}"),
                None => e.into(),
            }
        };
        let (addr, prefix_len) = if needs(false) {
            system::interface_ipv4_net(name).map_err(about(false))?
        } else {
            (Ipv4Addr::UNSPECIFIED, 32)
        };
        let net6 = needs(true)
            .then(|| system::interface_ipv6_net(name).map_err(about(true)))
            .transpose()?;
        Ok(Self {
            addr,
            prefix_len,
            addr6: net6.map(|(addr, _)| addr),
            prefix6_len: net6.map_or(128, |(_, len)| len),
            mac: system::interface_mac(name)?,
            index: system::interface_index(name)?,
        })
    }

    /// The LB's address of `group`'s family.
    fn addr_for(&self, group: IpAddr) -> IpAddr {
        match group {
            IpAddr::V4(_) => self.addr.into(),
            IpAddr::V6(_) => self.addr6.unwrap_or(Ipv6Addr::UNSPECIFIED).into(),
        }
    }
}

/// The program, loaded with its maps pinned and attached to the interface,
/// or swapped into the link a killed instance left.
struct Attached {
    ebpf: aya::Ebpf,
    pins: PinGuard,
    adopted: bool,
}

/// Loads (or adopts) and attaches the program; `ipv6_vips` sizes the IPv6
/// clients' connection table, which holds nothing without an IPv6 VIP.
fn attach(
    args: &RunArgs,
    iface: &Interface,
    auth_on: bool,
    ipv6_vips: bool,
) -> anyhow::Result<Attached> {
    // A link left behind means a killed instance whose XDP still forwards.
    let adopting = args.pin_path.join(instance::LINK_PIN).exists();
    let mut pins = PinGuard {
        dir: args.pin_path.clone(),
        armed: !adopting,
    };
    let choice = instance::choose_mode(
        args.xdp_mode,
        system::interface_driver(&args.iface)?.as_deref(),
    );
    if choice.forwarding_lost {
        warn!(iface = %args.iface, "XDP mode: {}", choice.why);
    } else if !adopting {
        info!(iface = %args.iface, mode = ?choice.mode, "XDP mode: {}", choice.why);
    }
    // Generic XDP (asked for, or the kernel's fallback) sees GSO
    // super-packets whole; native XDP sees wire frames only.
    let gso_handoff = choice.mode != XdpMode::Driver;
    let load = LoadParams {
        lb_addr: iface.addr,
        lb_addr6: iface.addr6.unwrap_or(Ipv6Addr::UNSPECIFIED),
        lb_mac: iface.mac,
        max_backends: args.max_backends,
        max_flows: args.max_flows,
        max_flows6: if ipv6_vips { args.max_flows } else { 1 },
        allowlist_on: !args.allow.is_empty(),
        auth_on,
        forwarding: args.forwarding.into(),
        segment_prefix_len: iface.prefix_len,
        segment6_prefix_len: iface.prefix6_len,
        gso_handoff,
    };
    let mut ebpf = load_program(load, Some(&args.pin_path)).with_context(|| {
        format!(
            "loading the XDP program with its maps pinned at {dir} (if they were left by an instance with \
             other flags or an older build, restart with its flags or remove it with `lb-user stop --pin-path {dir}`)",
            dir = args.pin_path.display()
        )
    })?;
    let program = xdp_program(&mut ebpf)?;
    let attachment = instance::attach_or_adopt(program, iface.index, choice.mode, &args.pin_path)
        .with_context(|| format!("attaching XDP to {}", args.iface))?;
    pins.armed = true;
    if attachment.adopted {
        info!(pin_path = %args.pin_path.display(), "took over the XDP program and maps left by an earlier instance (its attach mode stays)");
    }
    if gso_handoff {
        let program = loader::gso_program(&mut ebpf)?;
        instance::attach_or_adopt_gso(program, iface.index, &args.pin_path)
            .with_context(|| format!("attaching the GSO program to {}", args.iface))?;
        info!(iface = %args.iface, "GSO program on the ingress (TCX): GSO super-packets to IPIP backends, which generic XDP cannot wrap, are wrapped there");
    }
    Ok(Attached {
        ebpf,
        pins,
        adopted: attachment.adopted,
    })
}

/// Attaches (or adopts) the program, fills its maps and opens the query socket.
pub(super) fn start(args: &RunArgs, settings: Settings) -> anyhow::Result<Running> {
    system::require_root("lb-user run")?;
    kernel::require(kernel::User::Lb)?;
    let iface = Interface::read(&args.iface, &settings.plan)?;
    // Bound first: a port in use is an error before anything is attached.
    let metrics_endpoint = MetricsEndpoint::bind_flag(args.metrics)?;
    let groups = &settings.plan.groups;
    let registrations = Registrations::bind(groups, |g| iface.addr_for(g)).context(
        "binding the groups' UDP ports on the LB's address for the announcements that register \
         backends (stop the process that holds one, or give the group another port)",
    )?;
    let allows_ipv6 = args.allow.iter().any(|(prefix, _)| prefix.is_ipv6());
    if iface.addr6.is_some() && !args.allow.is_empty() && !allows_ipv6 {
        warn!(
            "--allow holds no IPv6 prefix: every IPv6 announcement is refused (counter announce_not_allowed)"
        );
    }
    system::require_bpffs(&args.pin_path)?;
    let lock = InstanceLock::acquire(&args.pin_path)?;
    fs::create_dir_all(&args.pin_path)
        .with_context(|| format!("creating the pin directory {}", args.pin_path.display()))?;
    let Attached {
        mut ebpf,
        pins,
        adopted,
    } = attach(
        args,
        &iface,
        !settings.keys.is_empty(),
        settings.plan.vips.iter().any(IpAddr::is_ipv6),
    )?;
    // Records go through the `log` facade into this process's tracing output.
    let xdp_log = EbpfLogger::init(&mut ebpf).context("reading the XDP program's log ring")?;
    let mut maps = LbMaps::take(&mut ebpf)?;
    for &(prefix, len) in &args.allow {
        maps.allow(prefix, len)?;
    }
    let queriers = Queriers {
        igmp: groups
            .iter()
            .any(|g| g.group.is_ipv4())
            .then(|| open_query_socket(&args.iface, iface.index, args.ttl, groups))
            .transpose()?,
        mld: iface
            .addr6
            .map(|lb| open_mld_querier(&args.iface, iface.index, lb, groups))
            .transpose()?,
        routed: open_routed_querier(args, &iface, groups, settings.keys.first().copied())?,
    };
    let params = ControlParams {
        lb_addr: iface.addr,
        ..settings.control
    };
    let reach = Reach {
        mode: args.forwarding.into(),
        segment: Segment {
            addr: iface.addr.into(),
            prefix_len: iface.prefix_len,
        },
        segment6: iface.addr6.map(|addr| Segment {
            addr: addr.into(),
            prefix_len: iface.prefix6_len,
        }),
    };
    let control_metrics = ControlMetrics::default();
    let mut controller = Controller::new(
        params,
        maps,
        queriers,
        registrations,
        groups,
        control_metrics.clone(),
    )?;
    controller.set_keys(&settings.keys)?;
    let services = &settings.plan.services;
    let next_hops = (reach.mode != ForwardingMode::L2 && !services.is_empty())
        .then(|| NextHops::open(&args.iface, reach, &args.pin_path))
        .transpose()?;
    let tables = TableParams {
        min_size: args.maglev_size,
        reach,
        second_chance_window: args.second_chance_window,
    };
    controller.serve(services, tables, next_hops)?;
    if let Some(endpoint) = metrics_endpoint {
        serve_metrics(endpoint, &args.pin_path, control_metrics)?;
    }
    // The VIP lives on the interface so that the LB answers ARP for it;
    // XDP takes the service traffic before the stack sees it.
    let vips = settings
        .plan
        .vips
        .iter()
        .map(|&vip| system::AddedAddress::add(vip, &args.iface, adopted))
        .collect::<Result<Vec<_>, _>>()?;
    info!(
        iface = %args.iface, lb_addr = %iface.addr, lb_addr6 = ?iface.addr6, pin_path = %args.pin_path.display(),
        groups = ?groups.iter().map(|g| format!("{}:{}", g.group, g.port)).collect::<Vec<_>>(),
        query_interval = %humantime::format_duration(args.query_interval),
        timeout = %humantime::format_duration(args.timeout),
        max_misses = args.max_misses, robustness = args.robustness,
        "load balancer running"
    );
    Ok(Running {
        controller,
        tick: params.tick(),
        xdp_log,
        _ebpf: ebpf,
        vips,
        pins,
        _lock: lock,
    })
}

/// The raw IGMP socket the queries leave from, joined to every group (so
/// the NIC accepts their reports) and to 224.0.0.22 (IGMPv3 reports).
fn open_query_socket(
    iface: &str,
    ifindex: u32,
    ttl: u32,
    groups: &[GroupConfig],
) -> anyhow::Result<IgmpSocket> {
    let socket =
        IgmpSocket::open(iface, ifindex, ttl).context("opening the raw IGMP socket for queries")?;
    for group in groups.iter().filter_map(|g| match g.group {
        IpAddr::V4(group) => Some(group),
        IpAddr::V6(_) => None,
    }) {
        socket
            .join(group)
            .with_context(|| format!("joining group {group} on {iface}"))?;
    }
    socket
        .join(Ipv4Addr::new(224, 0, 0, 22))
        .context("joining 224.0.0.22 for IGMPv3 reports")?;
    Ok(socket)
}

/// The raw ICMPv6 socket MLD queries leave from (from the interface's
/// link-local address, protocol §9), joined to every IPv6 group and to
/// ff02::16 (MLDv2 reports), so that the NIC accepts their reports.
fn open_mld_querier(
    iface: &str,
    ifindex: u32,
    lb: Ipv6Addr,
    groups: &[GroupConfig],
) -> anyhow::Result<MldQuerier> {
    let link_local = system::interface_ipv6_link_local(iface)?;
    let socket = MldSocket::open(iface, ifindex, link_local)
        .context("opening the raw ICMPv6 socket for MLD queries")?;
    let joined = groups
        .iter()
        .filter_map(|g| match g.group {
            IpAddr::V6(group) => Some(group),
            IpAddr::V4(_) => None,
        })
        .chain([ALL_MLDV2_ROUTERS.into()]);
    for group in joined {
        socket
            .join(group)
            .with_context(|| format!("joining group {group} on {iface}"))?;
    }
    Ok(MldQuerier { socket, lb })
}

/// With `--ttl` above 1 backends may sit behind multicast routers, which
/// never forward IGMP or MLD: the queries then also go out as UDP
/// (protocol §4.4, §9), from the LB's address of each family it serves a
/// group of, tagged with the first key.
fn open_routed_querier(
    args: &RunArgs,
    iface: &Interface,
    groups: &[GroupConfig],
    key: Option<[u8; 16]>,
) -> anyhow::Result<Option<RoutedQuerier>> {
    if args.ttl <= 1 {
        return Ok(None);
    }
    let families = [
        groups
            .iter()
            .any(|g| g.group.is_ipv4())
            .then_some(IpAddr::from(iface.addr)),
        iface.addr6.map(IpAddr::from),
    ];
    let sockets = families
        .into_iter()
        .flatten()
        .map(|lb| {
            let socket = RoutedSocket::sender(lb, iface.index, args.ttl)
                .with_context(|| format!("opening the UDP socket for routed queries from {lb}"))?;
            Ok((lb, socket))
        })
        .collect::<anyhow::Result<_>>()?;
    info!(
        ttl = args.ttl,
        "queries also go out as routed UDP queries to each group's port, for backends behind multicast routers"
    );
    Ok(Some(RoutedQuerier { sockets, key }))
}

/// Serves `/metrics` from the pinned maps (read as `status` reads them,
/// from a thread of their own) and the control loop's own measurements,
/// and the status page at `/` with its `/status.json`.
fn serve_metrics(
    endpoint: MetricsEndpoint,
    pin_path: &Path,
    control: ControlMetrics,
) -> anyhow::Result<()> {
    // One set of handles for both documents: each request reads the maps.
    let maps = std::sync::Arc::new(
        LbMaps::open_pinned(pin_path).context("opening the pinned maps for --metrics")?,
    );
    let page_maps = maps.clone();
    info!(addr = %endpoint.local_addr()?, "serving Prometheus metrics at /metrics and the status page at /");
    let json = move || {
        let status = status::read(&page_maps, system::monotonic_ns()).map_err(|e| e.to_string())?;
        serde_json::to_string(&status).map_err(|e| e.to_string())
    };
    endpoint.serve(
        move || {
            let status = status::read(&maps, system::monotonic_ns()).map_err(|e| e.to_string())?;
            metrics::render(&status, &control).map_err(|e| e.to_string())
        },
        Some(StatusPage {
            html: status::STATUS_PAGE,
            json: Box::new(json),
        }),
    );
    Ok(())
}
