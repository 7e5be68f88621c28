//! Frame builder and constants shared by the packet tests.
use std::net::{Ipv4Addr, Ipv6Addr};

use aya::programs::{TestRun, TestRunOptions, Xdp};
use lb_common::{
    Counter, ForwardingMode, ServiceKey,
    wire::{ANNOUNCE_V1_LEN, AnnouncementV1},
};
use lb_user::{
    loader::{LoadParams, load_program, xdp_program},
    maps::{GroupConfig, LbMaps},
    reach::{Reach, Segment},
    tables::{ServiceConfig, ServiceTables, TableParams},
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const LB: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const OTHER_BACKEND: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
/// A source that must not end up registered.
pub const STRANGER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);
pub const GROUP: Ipv4Addr = Ipv4Addr::new(239, 192, 0, 1);
pub const GROUP2: Ipv4Addr = Ipv4Addr::new(239, 192, 0, 2);
pub const BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const ROUTER_ALERT: [u8; 4] = [0x94, 0x04, 0, 0];
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// The LB's IPv6 address (2001:db8::1).
pub const LB6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const LOAD: LoadParams = LoadParams {
    lb_addr: LB,
    lb_addr6: LB6,
    lb_mac: LB_MAC,
    max_backends: 1024,
    max_flows: 4096,
    max_flows6: 4096,
    allowlist_on: false,
    auth_on: false,
    forwarding: ForwardingMode::Auto,
    segment_prefix_len: 24,
    segment6_prefix_len: 64,
    gso_handoff: false,
};

/// An untagged v1 announcement payload.
fn announcement(flags: u8, weight: u16, sequence: u64) -> [u8; ANNOUNCE_V1_LEN] {
    AnnouncementV1 {
        flags,
        weight,
        sequence,
        tag: 0,
    }
    .encode()
}

/// Builds Ethernet + IPv4 frames.
#[derive(Clone)]
pub struct Frame {
    pub src_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub options: Vec<u8>,
    pub frag: u16,
    pub payload: Vec<u8>,
    /// Bytes cut from the end after building.
    pub truncate: usize,
    pub ether_type: u16,
}

impl Frame {
    pub fn ip(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, payload: Vec<u8>) -> Self {
        Frame {
            src_mac: BACKEND_MAC,
            src,
            dst,
            proto,
            options: vec![],
            frag: 0,
            payload,
            truncate: 0,
            ether_type: 0x0800,
        }
    }

    /// A TCP segment without options, with `flags` (0x02 SYN, 0x10 ACK).
    pub fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Self {
        let mut tcp = vec![0u8; 20];
        tcp[..2].copy_from_slice(&sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&dport.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        Self::ip(6, src, dst, tcp)
    }

    pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, port: u16, data: &[u8]) -> Self {
        let mut udp = Vec::new();
        udp.extend_from_slice(&40000u16.to_be_bytes());
        udp.extend_from_slice(&port.to_be_bytes());
        udp.extend_from_slice(&(8 + data.len() as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(data);
        Self::ip(17, src, dst, udp)
    }

    pub fn announce(src: Ipv4Addr, port: u16, flags: u8, weight: u16, sequence: u64) -> Self {
        Self::udp(src, LB, port, &announcement(flags, weight, sequence))
    }

    pub fn igmp(message: Vec<u8>, dst: Ipv4Addr) -> Self {
        Self {
            options: ROUTER_ALERT.to_vec(),
            ..Self::ip(2, BACKEND, dst, message)
        }
    }

    pub fn with(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = vec![0x01, 0x00, 0x5e, 0, 0, 1];
        out.extend_from_slice(&self.src_mac);
        out.extend_from_slice(&self.ether_type.to_be_bytes());
        let header_len = 20 + self.options.len();
        let total = (header_len + self.payload.len()) as u16;
        out.push(0x40 | (header_len / 4) as u8);
        out.push(0);
        out.extend_from_slice(&total.to_be_bytes());
        out.extend_from_slice(&[0, 1]);
        out.extend_from_slice(&self.frag.to_be_bytes());
        out.extend_from_slice(&[1, self.proto, 0, 0]);
        out.extend_from_slice(&self.src.octets());
        out.extend_from_slice(&self.dst.octets());
        out.extend_from_slice(&self.options);
        out.extend_from_slice(&self.payload);
        out.truncate(out.len() - self.truncate);
        out
    }
}

/// An IPv6 group (protocol §9's default).
pub const GROUP6: Ipv6Addr = Ipv6Addr::new(0xff15, 0, 0, 0, 0, 0, 0, 0x4c42);

/// Builds Ethernet + IPv6 frames, with a Hop-by-Hop header when
/// `hop_by_hop` holds its options (6 + 8n bytes).
#[derive(Clone)]
pub struct Frame6 {
    pub src_mac: [u8; 6],
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub hop_by_hop: Vec<u8>,
    pub payload: Vec<u8>,
    /// Bytes cut from the end after building.
    pub truncate: usize,
    /// Added to the true payload length in the header (a length that lies).
    pub payload_len_extra: u16,
}

impl Frame6 {
    pub fn ip(next_header: u8, src: Ipv6Addr, dst: Ipv6Addr, payload: Vec<u8>) -> Self {
        Frame6 {
            src_mac: BACKEND_MAC,
            src,
            dst,
            next_header,
            hop_by_hop: vec![],
            payload,
            truncate: 0,
            payload_len_extra: 0,
        }
    }

    pub fn udp(src: Ipv6Addr, dst: Ipv6Addr, port: u16, data: &[u8]) -> Self {
        let Frame { payload, .. } = Frame::udp(LB, LB, port, data);
        Self::ip(17, src, dst, payload)
    }

    /// A v1 announcement from `src` to the LB's IPv6 address.
    pub fn announce(src: Ipv6Addr, port: u16, flags: u8, weight: u16, sequence: u64) -> Self {
        Self::udp(src, LB6, port, &announcement(flags, weight, sequence))
    }

    /// An MLD message behind a Hop-by-Hop header with Router Alert, as
    /// hosts send them.
    pub fn mld(message: Vec<u8>, dst: Ipv6Addr) -> Self {
        let link_local = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
        let mut options = lb_common::mld::HOP_BY_HOP_ROUTER_ALERT_MLD.to_vec();
        options.extend_from_slice(&[1, 0]);
        Self {
            hop_by_hop: options,
            ..Self::ip(58, link_local, dst, message)
        }
    }

    pub fn with(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = vec![0x33, 0x33, 0, 0, 0, 1];
        out.extend_from_slice(&self.src_mac);
        out.extend_from_slice(&0x86ddu16.to_be_bytes());
        let mut body = Vec::new();
        let first_next = if self.hop_by_hop.is_empty() {
            self.next_header
        } else {
            body.push(self.next_header);
            body.push(((2 + self.hop_by_hop.len()) / 8 - 1) as u8);
            body.extend_from_slice(&self.hop_by_hop);
            0
        };
        body.extend_from_slice(&self.payload);
        out.extend_from_slice(&[0x60, 0, 0, 0]);
        out.extend_from_slice(&(body.len() as u16 + self.payload_len_extra).to_be_bytes());
        out.extend_from_slice(&[first_next, 1]);
        out.extend_from_slice(&self.src.octets());
        out.extend_from_slice(&self.dst.octets());
        out.extend_from_slice(&body);
        out.truncate(out.len() - self.truncate);
        out
    }
}

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
/// The service the packet tests forward: TCP port 80 of the VIP.
pub const TCP_SERVICE: ServiceKey = ServiceKey {
    vip: lb_common::addr::mapped(VIP.octets()),
    port: 80,
    proto: lb_common::IPPROTO_TCP,
    _pad: 0,
};
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);

/// The IPv6 VIP and client of the IPv6 services' packet tests.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x64);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x50);
/// The port of the IPv6 group of [`TestLb::serving_ipv6_backends`].
pub const PORT6: u16 = 2001;

/// IPv6 backend `i`: its address and MAC.
pub fn backend6(i: u8) -> (Ipv6Addr, [u8; 6]) {
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10 + u16::from(i)),
        [0x02, 0xbe, 6, 0, 0, i],
    )
}

/// A TCP segment (20 bytes, `flags`) from `src`:`sport` to `dst`:`dport`.
pub fn tcp6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, flags: u8) -> Frame6 {
    let Frame { payload, .. } = Frame::tcp(CLIENT, sport, VIP, dport, flags);
    Frame6::ip(6, src, dst, payload)
}

/// Backend `i`: its address and MAC.
pub fn backend(i: u8) -> (Ipv4Addr, [u8; 6]) {
    (Ipv4Addr::new(10, 0, 0, 10 + i), [0x02, 0xbe, 0, 0, 0, i])
}

/// The benchmarks' statistic, as xtask's end-to-end rows use it.
pub use lb_tests::median;

/// How the control loop of an LB loaded with `load` reaches backends.
pub fn reach(load: LoadParams) -> Reach {
    Reach {
        mode: load.forwarding,
        segment: Segment {
            addr: load.lb_addr.into(),
            prefix_len: load.segment_prefix_len,
        },
        segment6: (!load.lb_addr6.is_unspecified()).then(|| Segment {
            addr: load.lb_addr6.into(),
            prefix_len: load.segment6_prefix_len,
        }),
    }
}

/// The loaded program with one group (GROUP, port 2000) serving one
/// service, driven the way the control loop drives it.
pub struct TestLb {
    pub ebpf: aya::Ebpf,
    pub maps: LbMaps,
    pub tables: ServiceTables,
}

/// The second-chance window of the tests' LBs: no backend of a test gets
/// that old, so their previous tables stay empty unless a test sets its own.
pub const SECOND_CHANCE_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

impl TestLb {
    pub fn new(load: LoadParams, service: ServiceKey, table_size: u32) -> Self {
        Self::with_window(load, service, table_size, SECOND_CHANCE_WINDOW)
    }

    /// The same, with previous tables of the backends registered
    /// `window` ago.
    pub fn with_window(
        load: LoadParams,
        service: ServiceKey,
        table_size: u32,
        window: std::time::Duration,
    ) -> Self {
        let mut ebpf = load_program(load, None).expect("load the XDP program (are you root?)");
        let mut maps = LbMaps::take(&mut ebpf).unwrap();
        maps.configure_groups(&[GroupConfig {
            group: GROUP.into(),
            port: 2000,
        }])
        .unwrap();
        let service = ServiceConfig {
            key: service,
            group_id: 0,
            group_ipv6: false,
        };
        let tables = ServiceTables::new(
            &mut maps,
            &[service],
            TableParams {
                min_size: table_size,
                reach: reach(load),
                second_chance_window: window,
            },
            Default::default(),
        )
        .unwrap();
        TestLb { ebpf, maps, tables }
    }

    /// Loaded with LOAD, its one group IPv6 (GROUP6, port PORT6) with
    /// three registered backends (`backend6`), serving TCP port 80 of
    /// `vip` from a 1009-entry table.
    pub fn serving_ipv6_backends(vip: std::net::IpAddr) -> Self {
        let mut lb = Self::serving(vip, true);
        for i in 0..3 {
            let (addr, mac) = backend6(i);
            let frame = Frame6::announce(addr, PORT6, 0, 100, 1)
                .with(|f| f.src_mac = mac)
                .bytes();
            lb.apply_announcement(&frame);
        }
        lb
    }

    /// An LB whose one service, TCP port 80 on `vip`, is served by group 0:
    /// IPv6 (GROUP6, port PORT6) if `group_ipv6`, else IPv4 (GROUP, 2000);
    /// no backend yet.
    pub fn serving(vip: std::net::IpAddr, group_ipv6: bool) -> Self {
        Self::serving_with(LOAD, vip, group_ipv6, SECOND_CHANCE_WINDOW)
    }

    /// [`TestLb::serving`] loaded with `load`, its second-chance window
    /// `window`.
    pub fn serving_with(
        load: LoadParams,
        vip: std::net::IpAddr,
        group_ipv6: bool,
        window: std::time::Duration,
    ) -> Self {
        let mut lb = Self::with(load);
        if group_ipv6 {
            lb.maps
                .configure_groups(&[GroupConfig {
                    group: GROUP6.into(),
                    port: PORT6,
                }])
                .unwrap();
        }
        let service = ServiceConfig {
            key: ServiceKey {
                vip: lb_common::addr::from_ip(vip),
                port: 80,
                proto: lb_common::IPPROTO_TCP,
                _pad: 0,
            },
            group_id: 0,
            group_ipv6,
        };
        lb.tables = ServiceTables::new(
            &mut lb.maps,
            &[service],
            TableParams {
                min_size: 1009,
                reach: reach(load),
                second_chance_window: window,
            },
            Default::default(),
        )
        .unwrap();
        lb
    }

    pub fn with(load: LoadParams) -> Self {
        Self::new(load, TCP_SERVICE, 1009)
    }

    pub fn program(&mut self) -> &mut Xdp {
        xdp_program(&mut self.ebpf).unwrap()
    }

    /// Runs one frame; returns the action and the frame as it left.
    pub fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run_with_ctx(frame, None)
    }

    /// Runs one frame with `ctx` (an `xdp_md`) if given.
    pub fn run_with_ctx(&mut self, frame: &[u8], ctx: Option<&[u8]>) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; frame.len() + 256];
        let result = self
            .program()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: ctx,
                ..TestRunOptions::default()
            })
            .unwrap();
        out.truncate(result.data_size_out as usize);
        (result.return_value, out)
    }

    /// Backend `i` announces itself; the tables are rebuilt as after an aging pass.
    pub fn announce(&mut self, i: u8, flags: u8, weight: u16) {
        let (addr, mac) = backend(i);
        let frame = Frame::announce(addr, 2000, flags, weight, 1)
            .with(|f| f.src_mac = mac)
            .bytes();
        self.apply_announcement(&frame);
    }

    /// Runs an announcement `frame` and rebuilds the tables as an aging
    /// pass would.
    pub fn apply_announcement(&mut self, frame: &[u8]) {
        // A refresh is consumed; a registration goes up to lb-user (its age).
        assert!([XDP_DROP, XDP_PASS].contains(&self.run(frame).0));
        self.sync_tables();
    }

    /// The tables follow both server lists, as after an aging pass.
    pub fn sync_tables(&mut self) {
        let backends = self.maps.backends().unwrap();
        let backends6 = self.maps.backends6().unwrap();
        self.tables
            .sync(&mut self.maps, &backends, &backends6)
            .unwrap();
    }

    /// Another program of the object (the benchmarks' floors), loaded on first use.
    pub fn extra_program(&mut self, name: &str) -> &mut Xdp {
        let program: &mut Xdp = self.ebpf.program_mut(name).unwrap().try_into().unwrap();
        if program.fd().is_err() {
            program.load().unwrap();
        }
        program
    }

    /// Tells XDP the wall clock now, accepting sequences within `max_skew_ns`.
    pub fn sync_clock(&mut self, max_skew_ns: u64) {
        let offset = lb_host::system::realtime_ns().wrapping_sub(lb_host::system::monotonic_ns());
        self.maps
            .set_clock(&lb_common::AuthClock {
                wall_offset_ns: offset,
                max_skew_ns,
            })
            .unwrap();
    }

    pub fn counter(&self, c: Counter) -> u64 {
        self.maps
            .counters()
            .unwrap()
            .into_iter()
            .find(|(k, _)| *k == c)
            .unwrap()
            .1
    }
}

/// Fails the test at once, with a clear message, when not run as root.
pub fn lb_tests_require_root() {
    lb_user::system::require_root("the packet tests").expect("run the packet tests as root");
}

/// IPIP needs the kernel's FIB: a namespace with the LB's interface,
/// routes and neighbours, for the IPIP packet tests and benchmark.
pub mod routed {
    use std::{net::Ipv4Addr, process::Command};

    use super::{Frame, LB, TestLb};

    /// The router toward the backend subnets, and its MAC (a permanent neighbour).
    pub const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
    pub const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
    /// A router whose MAC the kernel has not resolved.
    pub const UNRESOLVED_ROUTER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 253);
    /// A backend behind ROUTER (10.1.0.0/24); 10.2.0.0/24 is behind
    /// UNRESOLVED_ROUTER, anything else unrouted.
    pub const ROUTED_BACKEND: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
    /// The IPv6 router (link-local, a permanent neighbour with ROUTER_MAC)
    /// toward ROUTED_BACKEND6's subnet (2001:db8:1::/64); 2001:db8:2::/64
    /// is behind UNRESOLVED_ROUTER6.
    pub const ROUTER6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xfe);
    pub const UNRESOLVED_ROUTER6: std::net::Ipv6Addr =
        std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xfd);
    pub const ROUTED_BACKEND6: std::net::Ipv6Addr =
        std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
    pub const LB_IFACE: &str = "eth0";
    /// The LB interface's MTU.
    pub const MTU: usize = 1500;

    pub fn ip(args: &str) {
        let status = Command::new("ip")
            .args(args.split_whitespace())
            .status()
            .expect("run ip");
        assert!(status.success(), "ip {args}");
    }

    /// Runs `body` on a thread of its own in a new network namespace
    /// (which disappears with the thread), given the LB interface's index:
    /// the interface with LB's and LB6's addresses, LB_MAC and MTU,
    /// forwarding on for both families (as lb-user sets it: the FIB helper
    /// needs it), a resolved and an unresolved router of each family.
    pub fn in_namespace<T: Send>(body: impl FnOnce(u32) -> T + Send) -> T {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: unshare affects only this thread, which owns nothing yet.
                    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
                    ip("link set lo up");
                    ip(&format!("link add {LB_IFACE} type veth peer name peer0"));
                    ip(&format!("addr add {LB}/24 dev {LB_IFACE}"));
                    ip(&format!(
                        "link set {LB_IFACE} address 02:00:00:00:00:01 mtu {MTU} up"
                    ));
                    ip("link set peer0 up");
                    std::fs::write(
                        format!("/proc/sys/net/ipv4/conf/{LB_IFACE}/forwarding"),
                        "1",
                    )
                    .unwrap();
                    ip(&format!("route add 10.1.0.0/24 via {ROUTER}"));
                    ip(&format!("route add 10.2.0.0/24 via {UNRESOLVED_ROUTER}"));
                    ip(&format!(
                        "neigh replace {ROUTER} lladdr 02:00:00:00:00:fe dev {LB_IFACE} nud permanent"
                    ));
                    ip(&format!("-6 addr add {}/64 dev {LB_IFACE} nodad", super::LB6));
                    std::fs::write(
                        format!("/proc/sys/net/ipv6/conf/{LB_IFACE}/forwarding"),
                        "1",
                    )
                    .unwrap();
                    ip(&format!(
                        "-6 route add 2001:db8:1::/64 via {ROUTER6} dev {LB_IFACE}"
                    ));
                    ip(&format!(
                        "-6 route add 2001:db8:2::/64 via {UNRESOLVED_ROUTER6} dev {LB_IFACE}"
                    ));
                    ip(&format!(
                        "-6 neigh replace {ROUTER6} lladdr 02:00:00:00:00:fe dev {LB_IFACE} nud permanent"
                    ));
                    body(lb_user::system::interface_index(LB_IFACE).unwrap())
                })
                .join()
                .expect("the test thread panicked")
        })
    }

    /// `struct xdp_md` for a frame of `len` bytes arriving on `ifindex`:
    /// data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    /// egress_ifindex.
    pub fn xdp_md(len: usize, ifindex: u32) -> Vec<u8> {
        let md: [u32; 6] = [0, len as u32, 0, ifindex, 0, 0];
        md.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    impl TestLb {
        /// Runs one frame as if it arrived on interface `ifindex`.
        pub fn run_on(&mut self, ifindex: u32, frame: &[u8]) -> (u32, Vec<u8>) {
            self.run_with_ctx(frame, Some(&xdp_md(frame.len(), ifindex)))
        }

        /// `addr` (IPv6) announces itself through the router.
        pub fn register_routed6(&mut self, addr: std::net::Ipv6Addr) {
            let frame = super::Frame6::announce(addr, super::PORT6, 0, 100, 1)
                .with(|f| f.src_mac = ROUTER_MAC)
                .bytes();
            self.apply_announcement(&frame);
        }

        /// `addr` announces itself through the router (whose MAC the frame carries).
        pub fn register_routed(&mut self, addr: Ipv4Addr) {
            self.announce_routed(addr, 0, 100, 1);
        }

        /// `addr` announces `flags` and `weight` through the router, with
        /// `sequence`; the tables are rebuilt as after an aging pass.
        pub fn announce_routed(&mut self, addr: Ipv4Addr, flags: u8, weight: u16, sequence: u64) {
            let frame = Frame::announce(addr, 2000, flags, weight, sequence)
                .with(|f| f.src_mac = ROUTER_MAC)
                .bytes();
            self.apply_announcement(&frame);
        }
    }
}

/// An option-free IPv4 header with its checksum.
pub fn ipv4_header(
    total_len: usize,
    flags: u8,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&(total_len as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0, flags, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let sum = lb_common::wire::internet_checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h
}

/// CLIENT's TCP segment to the VIP's port 80 whose IP packet is
/// `total_len` bytes, DF set if `dont_fragment`.
pub fn tcp_segment(sport: u16, flags: u8, total_len: usize, dont_fragment: bool) -> Vec<u8> {
    Frame::tcp(CLIENT, sport, VIP, 80, flags)
        .with(|f| {
            f.payload.resize(total_len - 20, 0xab);
            f.frag = if dont_fragment { 0x4000 } else { 0 };
        })
        .bytes()
}

/// The ICMP "fragmentation needed" XDP must answer an IPv4 client's
/// `frame` with: back where it came from, from LB, the usable MTU, the
/// client's header and 8 bytes.
pub fn fragmentation_needed(frame: &[u8], usable_mtu: u16) -> Vec<u8> {
    let mut out = frame[6..12].to_vec();
    out.extend_from_slice(&frame[..6]);
    out.extend_from_slice(&[0x08, 0x00]);
    out.extend(ipv4_header(20 + 8 + 28, 0, 1, LB, CLIENT));
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&usable_mtu.to_be_bytes());
    icmp.extend_from_slice(&frame[14..14 + 28]);
    let sum = lb_common::wire::internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    out.extend(icmp);
    out
}

/// An IPv6 header of traffic class `tc`, no flow label, hop limit 64.
pub fn ipv6_header(payload_len: usize, next: u8, tc: u8, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut h = vec![0x60 | (tc >> 4), tc << 4, 0, 0];
    h.extend_from_slice(&(payload_len as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h
}

/// An IGMPv3 report with the given (record type, group, sources) records.
pub fn igmp_v3_report(records: &[(u8, Ipv4Addr, u16)]) -> Vec<u8> {
    let mut msg = vec![0x22, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&(records.len() as u16).to_be_bytes());
    for &(kind, group, sources) in records {
        msg.extend_from_slice(&[kind, 0]);
        msg.extend_from_slice(&sources.to_be_bytes());
        msg.extend_from_slice(&group.octets());
        for s in 0..sources {
            msg.extend_from_slice(&[10, 9, 0, s as u8]);
        }
    }
    let sum = lb_common::wire::internet_checksum(&msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    msg
}
