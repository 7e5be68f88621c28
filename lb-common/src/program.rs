//! The programs' names, maps and globals, each declared once for both
//! sides: lb-ebpf turns the tables into statics, lb-user into typed handles.

/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "xdp_lb";
/// Name of the XDP program of IPv6 packets (protocol §9), which
/// [`PROGRAM_NAME`] tail-calls through [`FAMILY_PROGRAMS`] slot
/// [`IPV6_SLOT`]: its own 512 bytes of stack, and no cost on the IPv4
/// paths beyond the check of the Ethernet type.
pub const IPV6_PROGRAM_NAME: &str = "xdp_lb6";
/// The program array the XDP program tail-calls its IPv6 half through
/// (not pinned: each instance loads it with the program that uses it).
pub const FAMILY_PROGRAMS: &str = "FAMILY_PROGRAMS";
/// The slot of [`IPV6_PROGRAM_NAME`] in [`FAMILY_PROGRAMS`].
pub const IPV6_SLOT: u32 = 0;
/// Name of the XDP program of IPv4 clients' packets to services of IPv6
/// backends, which [`PROGRAM_NAME`] tail-calls through slot
/// [`IPV4_TO_IPV6_SLOT`]: their rows' 16-byte addresses on a stack of
/// their own, so that the IPv4 paths stay as they were.
pub const IPV4_TO_IPV6_PROGRAM_NAME: &str = "xdp_lb4to6";
/// The slot of [`IPV4_TO_IPV6_PROGRAM_NAME`] in [`FAMILY_PROGRAMS`].
pub const IPV4_TO_IPV6_SLOT: u32 = 1;
/// Name of the XDP program of IPv6 clients' packets to VIPs, which
/// [`PROGRAM_NAME`] tail-calls through slot [`FORWARD6_SLOT`] for an
/// IPv6 packet whose destination's bit is set in the VIP filter (its
/// last two bytes, read in place); it tail-calls [`IPV6_PROGRAM_NAME`]
/// for a packet that is no service's. Each path pays one tail call, and
/// forwarding keeps its program's stack to itself.
pub const FORWARD6_PROGRAM_NAME: &str = "xdp_forward6";
/// The slot of [`FORWARD6_PROGRAM_NAME`] in [`FAMILY_PROGRAMS`].
pub const FORWARD6_SLOT: u32 = 2;
/// Name of the XDP program that wraps in IP-in-IP the packets the
/// programs with 16-byte backend addresses ([`IPV4_TO_IPV6_PROGRAM_NAME`],
/// [`FORWARD6_PROGRAM_NAME`]) picked a backend for, through slot
/// [`WRAP_SLOT`]: their stacks have no room left for it. The backend goes
/// in the CPU's `WRAP_HANDOFFS` slot.
pub const WRAP_PROGRAM_NAME: &str = "xdp_wrap";
/// The per-CPU map the handing programs leave the backend in for
/// [`WRAP_PROGRAM_NAME`]: never pinned, as it holds nothing past a packet.
pub const WRAP_HANDOFFS: &str = "WRAP_HANDOFFS";
/// The slot of [`WRAP_PROGRAM_NAME`] in [`FAMILY_PROGRAMS`].
pub const WRAP_SLOT: u32 = 3;
/// The programs of [`FAMILY_PROGRAMS`], by slot.
pub const FAMILY_PROGRAM_NAMES: [&str; 4] = [
    IPV6_PROGRAM_NAME,
    IPV4_TO_IPV6_PROGRAM_NAME,
    FORWARD6_PROGRAM_NAME,
    WRAP_PROGRAM_NAME,
];
/// Name of the do-nothing program the benchmarks measure as their floor.
pub const FLOOR_PROGRAM_NAME: &str = "xdp_floor";
/// Name of the program that only returns XDP_TX: the forwarding benchmark's ceiling.
pub const TX_FLOOR_PROGRAM_NAME: &str = "xdp_tx_floor";

/// Name of the LB's tc program that wraps GSO super-packets in IPIP.
pub const GSO_PROGRAM_NAME: &str = "lb_gso";
/// Name of the agent's decapsulation program (protocol §7) in its object.
pub const DECAP_PROGRAM_NAME: &str = "agent_decap";

/// Every map of the XDP program, declared once: `$callback!` receives the
/// whole table. lb-ebpf turns it into the `#[btf_map]` statics, lb-user into
/// `LbMaps` (typed handles, pinning, adoption), and [`map_name`] holds the
/// names. A map added here is pinned and adopted with no other change.
///
/// Each row: `NAME / field: Kind<Key, Value>[default capacity];`, where
/// `Kind` is an `aya_ebpf::btf_maps` type, `NAME` the map's name in BTF and
/// under the pin path, and `field` its handle in `LbMaps`. Arrays take no key
/// (their key is a `u32` index). `MmapArray` is an `Array` that userspace
/// can also map into its memory (BPF_F_MMAPABLE), for atomic updates.
#[macro_export]
macro_rules! program_maps {
    ($callback:ident) => {
        $callback! {
            /// The available-server list, written by XDP.
            BACKENDS / backends: HashMap<$crate::BackendKey, $crate::BackendEntry>[$crate::DEFAULT_MAX_BACKENDS];
            /// The available-server list's IPv6 backends (protocol §9), written by XDP.
            BACKENDS6 / backends6: HashMap<$crate::BackendKey6, $crate::BackendEntry>[$crate::DEFAULT_MAX_BACKENDS];
            /// Aging state of each backend, written by lb-user only; declared
            /// here so that it is created and pinned with BTF beside the list.
            BACKEND_AGING / aging: HashMap<$crate::BackendKey, $crate::AgingState>[$crate::DEFAULT_MAX_BACKENDS];
            /// The same for IPv6 backends.
            BACKEND_AGING6 / aging6: HashMap<$crate::BackendKey6, $crate::AgingState>[$crate::DEFAULT_MAX_BACKENDS];
            /// Announcement port (host order, the index) -> group id + 1, 0
            /// for no group: an array, so the check on every UDP packet to
            /// the LB needs no hash lookup.
            ANNOUNCE_PORTS / announce_ports: Array<u32>[1 << 16];
            /// Group address (network order) -> group id.
            GROUP_ADDRS / group_addrs: HashMap<[u8; 4], u32>[$crate::MAX_GROUPS];
            /// The same for IPv6 groups' ports: an IPv6 announcement to an
            /// IPv4 group's port registers nothing, and the IPv4 path reads
            /// no family.
            ANNOUNCE_PORTS6 / announce_ports6: Array<u32>[1 << 16];
            /// An IPv6 backend's MAC in its group -> its address (LRU), written
            /// by XDP when it registers or moves: an MLD leave from that
            /// MAC names it (see [`MacKey`]($crate::MacKey)).
            MAC_BACKENDS6 / mac_backends6: LruHashMap<$crate::MacKey, [u8; 16]>[$crate::DEFAULT_MAX_BACKENDS];
            /// IPv6 group address -> group id.
            GROUP_ADDRS6 / group_addrs6: HashMap<[u8; 16], u32>[$crate::MAX_GROUPS];
            /// IGMP report statistics per group (per CPU), written by XDP.
            GROUP_REPORTS / group_reports: PerCpuArray<$crate::GroupReports>[$crate::MAX_GROUPS];
            /// Group configuration and liveness, written by lb-user only.
            GROUP_STATUS / group_status: Array<$crate::GroupStatus>[$crate::MAX_GROUPS];
            /// Packet counters (per CPU), indexed by [`Counter`]($crate::Counter).
            COUNTERS / counters: PerCpuArray<u64>[$crate::Counter::ALL.len() as u32];
            /// Virtual IPs (network order, IPv4 IPv4-mapped) -> number of
            /// services on them.
            VIPS / vips: HashMap<[u8; 16], u32>[$crate::MAX_SERVICES];
            /// One 64-bit filter with bit [`vip_filter_bit`]($crate::vip_filter_bit)
            /// of every VIP set: a packet whose bit is clear goes to no VIP,
            /// known without a hash lookup. Written by lb-user with VIPS.
            VIP_FILTER / vip_filter: Array<u64>[1];
            /// Services, written by lb-user.
            SERVICES / services: HashMap<$crate::ServiceKey4, $crate::Service>[$crate::MAX_SERVICES];
            /// IPv6 VIPs' services, as SERVICES.
            SERVICES6 / services6: HashMap<$crate::ServiceKey, $crate::Service>[$crate::MAX_SERVICES];
            /// Each service's previous table (written by lb-user like
            /// SERVICES, from the backends registered at least the second-chance
            /// window ago, DRAINING ones included): a packet of a flow this
            /// LB does not know whose previous backend differs from its
            /// pick goes to the pick wrapped twice, naming the previous one
            /// (protocol §7, second chance).
            PREVIOUS_SERVICES / previous_services: HashMap<$crate::ServiceKey4, $crate::Service>[$crate::MAX_SERVICES];
            /// IPv6 VIPs' previous tables, as PREVIOUS_SERVICES.
            PREVIOUS_SERVICES6 / previous_services6: HashMap<$crate::ServiceKey, $crate::Service>[$crate::MAX_SERVICES];
            /// Rows: the backend of a service each names (see
            /// [`ServiceBackend`]($crate::ServiceBackend)), written by lb-user.
            SERVICE_BACKENDS / service_backends: Array<$crate::ServiceBackend>[$crate::backend_rows($crate::DEFAULT_MAX_BACKENDS)];
            /// What each row carried (per CPU), written by XDP: see
            /// [`Traffic`]($crate::Traffic).
            TRAFFIC / traffic: PerCpuArray<$crate::Traffic>[$crate::backend_rows($crate::DEFAULT_MAX_BACKENDS)];
            /// The pool of Maglev tables: each service has two slots, each a
            /// range of the pool (see `Service::maglev_index`), sized by
            /// lb-user to its backend count. An entry is a row of
            /// SERVICE_BACKENDS; 0 means no backend.
            MAGLEV / maglev: Array<u32>[$crate::MAGLEV_POOL];
            /// Connection table: an established flow keeps its backend.
            /// Set-associative, written by XDP with plain stores (an LRU
            /// hash map's insert cost more than the rest of a new flow's
            /// path): a flow lives in one of its two buckets,
            /// [`flow_buckets_of`]($crate::flow_buckets_of).
            FLOWS / flows: Array<$crate::FlowBucket>[$crate::flow_buckets($crate::DEFAULT_MAX_FLOWS)];
            /// The IPv6 clients' connection table, as FLOWS (keys of
            /// [`flow_words6`]($crate::flow_words6)): one bucket unless
            /// lb-user serves an IPv6 VIP.
            FLOWS6 / flows6: Array<$crate::FlowBucket6>[$crate::flow_buckets($crate::DEFAULT_MAX_FLOWS)];
            /// One count of the changes that can end a flow's claim on its
            /// backend (a removal, DOWN, a new MAC, a service's new group),
            /// bumped atomically after each by whoever made it (XDP or
            /// lb-user): a flow checked under the current count needs no
            /// server-list lookup. One count for all groups, so that a value
            /// names one moment whatever the group.
            BACKEND_EPOCH / backend_epoch: MmapArray<u32>[1];
            /// Source prefixes allowed to announce (network-order address, prefix length).
            ANNOUNCE_ALLOW / announce_allow: LpmTrie<[u8; 4], u8>[$crate::MAX_ALLOW_PREFIXES];
            /// The same for IPv6 sources (protocol §9).
            ANNOUNCE_ALLOW6 / announce_allow6: LpmTrie<[u8; 16], u8>[$crate::MAX_ALLOW_PREFIXES];
            /// Announcement keys (protocol §4.3), written by lb-user.
            AUTH_KEYS / auth_keys: Array<$crate::AuthKey>[$crate::MAX_AUTH_KEYS];
            /// Wall-clock offset and allowed skew, kept current by lb-user.
            AUTH_CLOCK / auth_clock: Array<$crate::AuthClock>[1];
            /// Last accepted sequence per backend (LRU), written by XDP; outlives
            /// removal so that a replayed announcement cannot bring a backend back.
            LAST_SEQUENCE / last_sequence: LruHashMap<$crate::BackendKey, u64>[2 * $crate::DEFAULT_MAX_BACKENDS];
            /// The same for IPv6 backends.
            LAST_SEQUENCE6 / last_sequence6: LruHashMap<$crate::BackendKey6, u64>[2 * $crate::DEFAULT_MAX_BACKENDS];
            /// IGMP leaves waiting for confirmation (with a key set a leave
            /// cannot be authenticated, protocol §4.2), written by XDP, resolved
            /// by lb-user.
            LEAVES / leaves: HashMap<$crate::BackendKey, $crate::PendingLeave>[$crate::DEFAULT_MAX_BACKENDS];
            /// The same for IPv6 backends: MLD leaves tied to a backend by
            /// its MAC, held with a key set (protocol §9).
            LEAVES6 / leaves6: HashMap<$crate::BackendKey6, $crate::PendingLeave>[$crate::DEFAULT_MAX_BACKENDS];
            /// Why and when backends left the server list (LRU), written by
            /// XDP and lb-user where they remove one; `status` shows them.
            DEPARTURES / departures: LruHashMap<$crate::BackendKey, $crate::Departure>[$crate::MAX_DEPARTURES];
            /// The same for IPv6 backends.
            DEPARTURES6 / departures6: LruHashMap<$crate::BackendKey6, $crate::Departure>[$crate::MAX_DEPARTURES];
            /// Per-CPU rate limit of the data path's log records.
            LOG_BUDGET / log_budget: PerCpuArray<$crate::LogBudget>[1];
            /// Backends reached by IPIP whose next hop the kernel's FIB did
            /// not give (LRU), written by XDP when it drops their packets;
            /// lb-user reports them and asks the kernel to resolve them.
            NEXT_HOP_ERRORS / next_hop_errors: LruHashMap<[u8; 4], $crate::NextHopError>[$crate::MAX_NEXT_HOP_ERRORS];
            /// The next hop toward each IPIP backend as the kernel's FIB last
            /// gave it (LRU), written and read by XDP: a FIB lookup per
            /// packet costs more than the rest of the IPIP path.
            NEXT_HOPS / next_hops: LruHashMap<[u8; 4], $crate::NextHop>[$crate::DEFAULT_MAX_BACKENDS];
            /// NEXT_HOP_ERRORS for IPv6 backends (protocol §9).
            NEXT_HOP_ERRORS6 / next_hop_errors6: LruHashMap<[u8; 16], $crate::NextHopError>[$crate::MAX_NEXT_HOP_ERRORS];
            /// NEXT_HOPS for IPv6 backends, from the FIB's IPv6 lookup.
            NEXT_HOPS6 / next_hops6: LruHashMap<[u8; 16], $crate::NextHop>[$crate::DEFAULT_MAX_BACKENDS];
            /// Packet counters of the GSO program (per CPU), indexed by
            /// [`GsoCounter`]($crate::GsoCounter).
            GSO_COUNTERS / gso_counters: PerCpuArray<u64>[$crate::GsoCounter::ALL.len() as u32];
            /// This CPU's coarse clock as last read, with the tick it was
            /// read in (per CPU), written and read by XDP: the coarse clock
            /// helper is read once per tick, not on every heartbeat.
            COARSE_CLOCK / coarse_clock: PerCpuArray<$crate::CoarseClock>[1];
            /// The GSO super-packet XDP passed last on this CPU, with the
            /// backend and next hop it chose (per CPU), written by XDP and
            /// taken by the GSO program: see [`GsoHandoff`]($crate::GsoHandoff).
            GSO_HANDOFFS / gso_handoffs: PerCpuArray<$crate::GsoHandoff>[1];
        }
    };
}

/// The globals of the XDP program that the loader sets, declared once
/// like [`program_maps!`]: `NAME: Type = default;`.
#[macro_export]
macro_rules! program_globals {
    ($callback:ident) => {
        $callback! {
            /// The LB's own unicast address: announcements go to it. Its
            /// bytes in network order as one `u32` (`u32::from_ne_bytes`),
            /// as the other addresses and the MAC here: a byte array's
            /// volatile read is a load per byte on every forwarding path.
            LB_ADDR: u32 = 0;
            /// The LB's own unicast IPv6 address (protocol §9): IPv6
            /// announcements go to it; all zero (no IPv6 group), none does.
            /// Bytes in network order, as LB_ADDR's.
            LB_ADDR6: u128 = 0;
            /// MAC of the LB's interface, the source of forwarded frames:
            /// its 6 bytes in the first 6 of a `u64` (`u64::from_ne_bytes`).
            LB_MAC: u64 = 0;
            /// 1 when announcements must carry a valid tag.
            AUTH_ON: u8 = 0;
            /// 1 when only sources in ANNOUNCE_ALLOW (IPv6: ANNOUNCE_ALLOW6) may announce.
            ALLOWLIST_ON: u8 = 0;
            /// How client traffic reaches a backend: a [`ForwardingMode`]($crate::ForwardingMode).
            FORWARDING: u8 = 0;
            /// Netmask of the LB's segment (network order): in `auto` mode a
            /// backend outside LB_ADDR's segment is reached by IPIP.
            /// Bytes in network order, as LB_ADDR's.
            SEGMENT_MASK: u32 = 0;
            /// Netmask of the LB's IPv6 prefix: only an IPv6 backend inside
            /// it is tied to the MAC it announces from (one behind a router
            /// announces from the router's, whose MLD leaves, an MLD proxy's,
            /// must not name it).
            /// Bytes in network order, as LB_ADDR6's.
            SEGMENT6_MASK: u128 = 0;
            /// Buckets of FLOWS (its capacity): set with it at load.
            FLOW_BUCKETS: u32 = $crate::flow_buckets($crate::DEFAULT_MAX_FLOWS);
            /// Buckets of FLOWS6: set with it at load.
            FLOW_BUCKETS6: u32 = $crate::flow_buckets($crate::DEFAULT_MAX_FLOWS);
            /// 1 when the GSO program ([`GSO_PROGRAM_NAME`]($crate::GSO_PROGRAM_NAME))
            /// runs on the interface's ingress (XDP in generic mode): XDP
            /// hands it the GSO super-packets it cannot wrap in IPIP.
            GSO_HANDOFF: u8 = 0;
        }
    };
}

/// The name of each global in [`program_globals!`].
pub mod global_name {
    macro_rules! names {
        ($( $(#[$doc:meta])* $name:ident : $ty:ty = $default:expr; )*) => {
            $( $(#[$doc])* pub const $name: &str = stringify!($name); )*
        };
    }
    crate::program_globals!(names);
}

/// The name of each map in [`program_maps!`]: in BTF and under the pin path.
pub mod map_name {
    macro_rules! names {
        ($( $(#[$doc:meta])* $name:ident / $field:ident : $kind:ident <$($ty:ty),+> [$cap:expr]; )*) => {
            $( $(#[$doc])* pub const $name: &str = stringify!($name); )*
            /// Every map, in declaration order.
            pub const ALL: &[&str] = &[$($name),*];
        };
    }
    crate::program_maps!(names);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_names_are_unique() {
        let mut names = map_name::ALL.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), map_name::ALL.len());
    }
}
