//! Types and constants shared by the XDP program and userspace.
//!
//! Every map value is `#[repr(C)]` with explicit padding fields, so the kernel
//! and userspace agree on the layout byte for byte; sizes are checked at
//! compile time.
#![cfg_attr(not(test), no_std)]

pub mod siphash;
pub mod wire;

/// Most groups one LB instance serves.
pub const MAX_GROUPS: u32 = 16;

/// Default capacity of the server list.
pub const DEFAULT_MAX_BACKENDS: u32 = 65536;

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
            /// Aging state of each backend, written by lb-user only; declared
            /// here so that it is created and pinned with BTF beside the list.
            BACKEND_AGING / aging: HashMap<$crate::BackendKey, $crate::AgingState>[$crate::DEFAULT_MAX_BACKENDS];
            /// Announcement port (host order, the index) -> group id + 1, 0
            /// for no group: an array, so the check on every UDP packet to
            /// the LB needs no hash lookup.
            ANNOUNCE_PORTS / announce_ports: Array<u32>[1 << 16];
            /// Group address (network order) -> group id.
            GROUP_ADDRS / group_addrs: HashMap<[u8; 4], u32>[$crate::MAX_GROUPS];
            /// IGMP report statistics per group (per CPU), written by XDP.
            GROUP_REPORTS / group_reports: PerCpuArray<$crate::GroupReports>[$crate::MAX_GROUPS];
            /// Group configuration and liveness, written by lb-user only.
            GROUP_STATUS / group_status: Array<$crate::GroupStatus>[$crate::MAX_GROUPS];
            /// Packet counters (per CPU), indexed by [`Counter`]($crate::Counter).
            COUNTERS / counters: PerCpuArray<u64>[$crate::Counter::ALL.len() as u32];
            /// Virtual IPs (network order) -> number of services on them.
            VIPS / vips: HashMap<[u8; 4], u32>[$crate::MAX_SERVICES];
            /// One 64-bit filter with bit [`vip_filter_bit`]($crate::vip_filter_bit)
            /// of every VIP set: a packet whose bit is clear goes to no VIP,
            /// known without a hash lookup. Written by lb-user with VIPS.
            VIP_FILTER / vip_filter: Array<u64>[1];
            /// Services, written by lb-user.
            SERVICES / services: HashMap<$crate::ServiceKey, $crate::Service>[$crate::MAX_SERVICES];
            /// The pool of Maglev tables: each service has two slots, each a
            /// range of the pool (see `Service::maglev_index`), sized by
            /// lb-user to its backend count; an all-zero entry means no backend.
            MAGLEV / maglev: Array<[u8; 4]>[$crate::MAGLEV_POOL];
            /// Connection table: an established flow keeps its backend.
            /// Set-associative, written by XDP with plain stores (an LRU
            /// hash map's insert cost more than the rest of a new flow's
            /// path): a flow lives in one of its two buckets,
            /// [`flow_buckets_of`]($crate::flow_buckets_of).
            FLOWS / flows: Array<$crate::FlowBucket>[$crate::flow_buckets($crate::DEFAULT_MAX_FLOWS)];
            /// One count of the changes that can end a flow's claim on its
            /// backend (a removal, DOWN, a new MAC, a service's new group),
            /// bumped atomically after each by whoever made it (XDP or
            /// lb-user): a flow checked under the current count needs no
            /// server-list lookup. One count for all groups, so that a value
            /// names one moment whatever the group.
            BACKEND_EPOCH / backend_epoch: MmapArray<u32>[1];
            /// Source prefixes allowed to announce (network-order address, prefix length).
            ANNOUNCE_ALLOW / announce_allow: LpmTrie<[u8; 4], u8>[$crate::MAX_ALLOW_PREFIXES];
            /// Announcement keys (protocol §4.3), written by lb-user.
            AUTH_KEYS / auth_keys: Array<$crate::AuthKey>[$crate::MAX_AUTH_KEYS];
            /// Wall-clock offset and allowed skew, kept current by lb-user.
            AUTH_CLOCK / auth_clock: Array<$crate::AuthClock>[1];
            /// Last accepted sequence per backend (LRU), written by XDP; outlives
            /// removal so that a replayed announcement cannot bring a backend back.
            LAST_SEQUENCE / last_sequence: LruHashMap<$crate::BackendKey, u64>[2 * $crate::DEFAULT_MAX_BACKENDS];
            /// IGMP leaves waiting for confirmation (with a key set a leave
            /// cannot be authenticated, protocol §4.2), written by XDP, resolved
            /// by lb-user.
            LEAVES / leaves: HashMap<$crate::BackendKey, $crate::PendingLeave>[$crate::DEFAULT_MAX_BACKENDS];
            /// Why and when backends left the server list (LRU), written by
            /// XDP and lb-user where they remove one; `status` shows them.
            DEPARTURES / departures: LruHashMap<$crate::BackendKey, $crate::Departure>[$crate::MAX_DEPARTURES];
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
            /// The LB's own unicast address (network order): announcements go to it.
            LB_ADDR: [u8; 4] = [0; 4];
            /// MAC of the LB's interface, the source of forwarded frames.
            LB_MAC: [u8; 6] = [0; 6];
            /// 1 when announcements must carry a valid tag.
            AUTH_ON: u8 = 0;
            /// 1 when only sources in ANNOUNCE_ALLOW may announce.
            ALLOWLIST_ON: u8 = 0;
            /// How client traffic reaches a backend: a [`ForwardingMode`]($crate::ForwardingMode).
            FORWARDING: u8 = 0;
            /// Netmask of the LB's segment (network order): in `auto` mode a
            /// backend outside LB_ADDR's segment is reached by IPIP.
            SEGMENT_MASK: [u8; 4] = [0; 4];
            /// Buckets of FLOWS (its capacity): set with it at load.
            FLOW_BUCKETS: u32 = $crate::flow_buckets($crate::DEFAULT_MAX_FLOWS);
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

/// Keys accepted at once (rotation without downtime).
pub const MAX_AUTH_KEYS: u32 = 2;

/// One announcement key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AuthKey {
    pub key: [u8; 16],
    /// 1 if this slot holds a key.
    pub active: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<AuthKey>() == 24);

/// What XDP needs to judge an announcement's timestamp.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AuthClock {
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, in ns (wrapping).
    pub wall_offset_ns: u64,
    /// Largest accepted distance between a sequence and the LB's clock.
    pub max_skew_ns: u64,
}
const _: () = assert!(core::mem::size_of::<AuthClock>() == 16);

/// Most `--allow` prefixes.
pub const MAX_ALLOW_PREFIXES: u32 = 1024;

/// Most services one LB instance serves.
pub const MAX_SERVICES: u32 = 16;
/// Entries of the Maglev pool (4 bytes each: 32 MiB, allocated when the
/// program loads): every service's two table slots are ranges of it.
pub const MAGLEV_POOL: u32 = 1 << 23;
/// Largest Maglev table: the largest prime below 2^21, so that a service's
/// two slots take at most half of the pool. At 65,536 backends it still
/// gives each backend 32 entries.
pub const MAX_MAGLEV_SIZE: u32 = 2_097_143;
/// Default capacity of the connection table.
pub const DEFAULT_MAX_FLOWS: u32 = 262_144;

/// IP protocol numbers of the forwarded transports.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// A service's transport as written in flags, `status` and metrics.
pub const fn transport_name(proto: u8) -> &'static str {
    if proto == IPPROTO_TCP { "tcp" } else { "udp" }
}

/// A service: a transport port on a virtual IP.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// Virtual IP, network order.
    pub vip: [u8; 4],
    /// Port, host order.
    pub port: u16,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 8);

/// How XDP finds a service's backends.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Service {
    /// The service's number, recorded in its flows.
    pub service_id: u32,
    /// Group whose registered backends serve it.
    pub group_id: u32,
    /// The slot (0 or 1) XDP reads; lb-user fills the other, then flips this.
    pub active_slot: u32,
    pub _pad: u32,
    /// Where each slot's table starts in `MAGLEV`.
    pub slot_offset: [u32; 2],
    /// Entries of each slot's table (a prime, at most [`MAX_MAGLEV_SIZE`]).
    pub slot_size: [u32; 2],
}
const _: () = assert!(core::mem::size_of::<Service>() == 32);

impl Service {
    /// Index in `MAGLEV` of `entry` of `slot`.
    #[inline(always)]
    pub const fn maglev_index(&self, slot: u32, entry: u32) -> u32 {
        self.slot_offset[(slot & 1) as usize] + entry
    }

    /// Entries of the table XDP reads now.
    #[inline(always)]
    pub const fn active_size(&self) -> u32 {
        self.slot_size[(self.active_slot & 1) as usize]
    }
}

/// The bit of `addr` in the VIP filter: from its two low bytes, which
/// differ most between the addresses of one site.
#[inline(always)]
pub const fn vip_filter_bit(addr: [u8; 4]) -> u64 {
    1 << ((addr[3] ^ addr[2]) & 63)
}

/// A client flow (5-tuple), as seen arriving at the LB.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    /// Ports in network order, as on the wire.
    pub src_port: [u8; 2],
    pub dst_port: [u8; 2],
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 16);

/// The backend a flow is pinned to, and what XDP last found of it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Flow {
    /// Backend address, network order.
    pub backend: [u8; 4],
    /// The backend's MAC when the flow was last checked against the
    /// server list.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// The `BACKEND_EPOCH` count read before that check: while it is
    /// current, the backend is still registered, up and at `mac`.
    pub epoch: u32,
}
const _: () = assert!(core::mem::size_of::<Flow>() == 16);

impl Flow {
    /// A flow pinned to `backend` at `mac`, checked under count `epoch`.
    pub const fn new(backend: [u8; 4], mac: [u8; 6], epoch: u32) -> Self {
        Self {
            backend,
            mac,
            _pad: [0; 2],
            epoch,
        }
    }
}

impl FlowKey {
    /// The key as two words (addresses; ports and protocol), as a
    /// connection-table slot stores it: never all zero (the protocol is not).
    #[inline(always)]
    pub fn words(&self) -> [u64; 2] {
        [
            u64::from(u32::from_ne_bytes(self.src)) << 32 | u64::from(u32::from_ne_bytes(self.dst)),
            u64::from(u16::from_ne_bytes(self.src_port)) << 24
                | u64::from(u16::from_ne_bytes(self.dst_port)) << 8
                | u64::from(self.proto),
        ]
    }
}

/// The 64-bit flow hash: its low half indexes the Maglev table
/// ([`flow_hash`]); each half names one of the flow's two buckets in the
/// connection table ([`flow_buckets_of`]).
#[inline(always)]
pub fn flow_hash64(key: &FlowKey) -> u64 {
    let [addrs, rest] = key.words();
    splitmix64(addrs ^ rest.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// splitmix64's finalizer.
#[inline(always)]
const fn splitmix64(mut h: u64) -> u64 {
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The flow hash XDP indexes the Maglev table with. Shared so that tests
/// can predict where a flow lands.
#[inline(always)]
pub fn flow_hash(key: &FlowKey) -> u32 {
    flow_hash64(key) as u32
}

/// Ways (slots) per bucket of the connection table.
pub const FLOW_WAYS: usize = 4;
// XDP masks a way's index with FLOW_WAYS - 1.
const _: () = assert!(FLOW_WAYS.is_power_of_two());

/// Slots per flow of the connection table's capacity: with two buckets
/// per flow, a table half full evicts almost no flow early (measured in
/// lb-user's forwarding tests), as an LRU hash map of that capacity.
pub const FLOW_SLOTS_PER_FLOW: u32 = 2;

/// Buckets of a connection table for `max_flows` flows.
pub const fn flow_buckets(max_flows: u32) -> u32 {
    (max_flows.saturating_mul(FLOW_SLOTS_PER_FLOW)).div_ceil(FLOW_WAYS as u32)
}

/// The two buckets (indices among `buckets`) a flow of hash `hash` may
/// live in: a new flow takes the one with room, which keeps the table
/// nearly full before a flow is evicted early. A multiply and a shift
/// each: no division, any count.
#[inline(always)]
pub fn flow_buckets_of(hash: u64, buckets: u32) -> [u32; 2] {
    let index = |half: u64| ((half * u64::from(buckets)) >> 32) as u32;
    [index(hash >> 32), index(hash & 0xffff_ffff)]
}

/// The check of a slot holding a flow of hash `hash` pinned to `backend`
/// at `mac`: a slot torn by two CPUs writing it at once (its key from one
/// flow, its backend from another) fails it, and counts as no entry.
#[inline(always)]
pub fn flow_check(hash: u64, backend: [u8; 4], mac: [u8; 6]) -> u32 {
    // The MAC in the low 48 bits, the whole address in the high 32: they
    // overlap in 16 bits, so only a change of both at once, in step,
    // could leave the word as it was.
    let mac = u64::from(u16::from_ne_bytes([mac[0], mac[1]])) << 32
        | u64::from(u32::from_ne_bytes([mac[2], mac[3], mac[4], mac[5]]));
    let backend = u64::from(u32::from_ne_bytes(backend)) << 32;
    splitmix64(hash ^ mac ^ backend) as u32
}

/// One slot of the connection table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowSlot {
    /// [`FlowKey::words`] of the flow; all zero for an empty slot.
    pub key: [u64; 2],
    pub flow: Flow,
    /// Low 32 bits of jiffies when the flow was last used, updated at
    /// most every [`FLOW_USED_TICKS`]: a new flow takes an empty slot of
    /// its buckets, else their least recently used.
    pub used: u32,
    /// [`flow_check`] of the key, backend and MAC.
    pub check: u32,
}
const _: () = assert!(core::mem::size_of::<FlowSlot>() == 40);

impl FlowSlot {
    /// Whether the slot holds no flow.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.key == [0; 2]
    }
}

/// One bucket of the connection table: [`FLOW_WAYS`] slots.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowBucket {
    pub ways: [FlowSlot; FLOW_WAYS],
}
const _: () = assert!(core::mem::size_of::<FlowBucket>() == 160);

/// Ticks (jiffies) a slot's `used` may lag before a packet of its flow
/// writes it again: a write per flow every 0.06-0.6 s (HZ 1000-100) keeps
/// active flows from being evicted without a store on every packet.
pub const FLOW_USED_TICKS: u32 = 64;

/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "xdp_lb";
/// Name of the do-nothing program the benchmarks measure as their floor.
pub const FLOOR_PROGRAM_NAME: &str = "xdp_floor";
/// Name of the program that only returns XDP_TX: the forwarding benchmark's ceiling.
pub const TX_FLOOR_PROGRAM_NAME: &str = "xdp_tx_floor";

/// Key of the server list: one backend in one group.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackendKey {
    pub group_id: u32,
    /// The backend's unicast IPv4 address, network order.
    pub addr: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<BackendKey>() == 8);

/// One registered backend, as XDP last saw it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendEntry {
    /// CLOCK_MONOTONIC_COARSE ns of the last accepted announcement, as
    /// XDP read it in that tick (CLOCK_MONOTONIC up to
    /// [`COARSE_LAG_MAX_NS`] late).
    pub last_seen_ns: u64,
    /// Sequence of the last v1 announcement (0 for plain announcements).
    pub sequence: u64,
    /// Announcements accepted since the backend registered.
    pub announcements: u64,
    /// Ethernet source address of the last announcement.
    pub mac: [u8; 6],
    /// Announced weight (default [`wire::DEFAULT_WEIGHT`]).
    pub weight: u16,
    /// `wire::FLAG_*` bits of the last announcement.
    pub flags: u8,
    /// Payload version of the last announcement: 0 plain, 1 v1.
    pub version: u8,
    pub _pad: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<BackendEntry>() == 40);

/// An IGMP leave waiting for confirmation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PendingLeave {
    /// CLOCK_MONOTONIC ns of the leave.
    pub leave_ns: u64,
    /// The backend's `announcements` when the leave came: a larger count
    /// refutes the leave (a count, not a time, because announcements are
    /// stamped with the coarse clock).
    pub announcements: u64,
}
const _: () = assert!(core::mem::size_of::<PendingLeave>() == 16);

/// Control-plane aging state of one backend (protocol §5.3).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AgingState {
    /// When the heartbeat timer last (re)started, CLOCK_MONOTONIC ns.
    pub timer_start_ns: u64,
    /// `last_seen_ns` of the entry when it was last examined.
    pub seen_ns: u64,
    /// Consecutive misses.
    pub misses: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<AgingState>() == 24);

/// Per-CPU statistics of one group, written by XDP: what lb-user needs
/// every tick without reading the server list.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GroupReports {
    /// Membership reports (v1, v2, v3 records other than leaves, routed) seen.
    pub reports: u64,
    /// Leaves (IGMPv2 leave, IGMPv3 change to include nothing) seen.
    pub leaves: u64,
    /// Announcements accepted (liveness: protocol §5.4).
    pub announcements: u64,
    /// Changes of the group's server list that XDP made: a backend
    /// inserted or removed, a changed weight or flags, a leave held for
    /// confirmation. lb-user reads the list when this moves.
    pub changes: u64,
}
const _: () = assert!(core::mem::size_of::<GroupReports>() == 32);

/// How client traffic reaches a backend (protocol §7).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardingMode {
    /// Layer-2 direct server return: backends on the LB's segment only.
    L2 = 0,
    /// L2 for backends on the LB's segment, IPIP for the others.
    Auto = 1,
    /// IPIP to every backend.
    Ipip = 2,
}

impl ForwardingMode {
    /// Whether traffic to `backend` is wrapped in IPIP, for an LB at
    /// `lb_addr` whose segment has netmask `mask` (all network order).
    #[inline(always)]
    pub fn wraps(self, backend: [u8; 4], lb_addr: [u8; 4], mask: [u8; 4]) -> bool {
        match self {
            ForwardingMode::L2 => false,
            ForwardingMode::Ipip => true,
            ForwardingMode::Auto => {
                (u32::from_ne_bytes(backend) ^ u32::from_ne_bytes(lb_addr))
                    & u32::from_ne_bytes(mask)
                    != 0
            }
        }
    }

    /// The mode stored as `raw` (anything unknown is L2, which wraps nothing).
    #[inline(always)]
    pub fn from_raw(raw: u8) -> Self {
        match raw {
            1 => ForwardingMode::Auto,
            2 => ForwardingMode::Ipip,
            _ => ForwardingMode::L2,
        }
    }
}

/// Backends with a next-hop error remembered at once.
pub const MAX_NEXT_HOP_ERRORS: u32 = 1024;

/// Why the kernel's FIB gave no next hop toward a backend, when XDP last
/// asked: `result` is the `BPF_FIB_LKUP_RET_*` code.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NextHopError {
    /// CLOCK_MONOTONIC ns of the last packet dropped for it.
    pub last_ns: u64,
    pub result: u32,
    /// Packets dropped for it since the entry was created.
    pub drops: u32,
}
const _: () = assert!(core::mem::size_of::<NextHopError>() == 16);

/// A next hop toward an IPIP backend from the kernel's FIB, used by XDP
/// for [`NEXT_HOP_CACHE_NS`] after the lookup for packets no larger than
/// one that the lookup's MTU check let through.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NextHop {
    /// CLOCK_MONOTONIC_COARSE ns of the lookup as XDP read it in that
    /// tick (read by XDP only).
    pub resolved_ns: u64,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    /// The largest outer packet (bytes) the lookups let through.
    pub fits: u16,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<NextHop>() == 24);

/// A reading of the coarse clock and the tick (jiffies) it was taken in.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CoarseClock {
    pub jiffies: u64,
    /// CLOCK_MONOTONIC_COARSE ns.
    pub ns: u64,
}
const _: () = assert!(core::mem::size_of::<CoarseClock>() == 16);

/// Name of the LB's tc program that wraps GSO super-packets in IPIP.
pub const GSO_PROGRAM_NAME: &str = "lb_gso";

/// What XDP leaves in its CPU's slot of `GSO_HANDOFFS` for the GSO program
/// when it passes a GSO super-packet: the backend and next hop it chose.
/// XDP cannot wrap such a packet (it would have to split it); tc can, with
/// `bpf_skb_adjust_room`, which keeps the packet's GSO state valid. Generic
/// XDP and the tc ingress hook run one after the other for a packet, on
/// one CPU, so the slot is the packet's own when its IPv4 header matches;
/// a slot rather than the packet's metadata because some kernels refuse
/// `bpf_xdp_adjust_meta` (measured: Linux 6.18.44 of these machines).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GsoHandoff {
    /// The super-packet's IPv4 header (20 bytes: no options reach this
    /// path), as XDP saw it: tc wraps only the packet that matches it.
    pub ip_header: [u8; 20],
    /// The backend (network order): the outer header's destination.
    pub backend: [u8; 4],
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<GsoHandoff>() == 36);

/// Most XDP's coarse readings lag CLOCK_MONOTONIC: two of the longest
/// timer ticks (HZ 100), because jiffies advance just before the coarse
/// clock at each tick and XDP reads the clock once per jiffy.
pub const COARSE_LAG_MAX_NS: u64 = 2 * 10_000_000;

/// How long XDP trusts a next hop from the FIB: a changed route,
/// neighbour or MTU applies to IPIP traffic within this time.
pub const NEXT_HOP_CACHE_NS: u64 = 100_000_000;

/// What a `BPF_FIB_LKUP_RET_*` code means for an operator.
pub const fn fib_result_name(result: u32) -> &'static str {
    match result {
        1 => "blackhole route",
        2 => "unreachable route",
        3 => "prohibited route",
        4 => "not forwarded (no route out of the LB's interface)",
        5 => "forwarding disabled",
        6 => "unsupported lightweight tunnel",
        7 => "next hop not resolved (no neighbour entry)",
        9 => "no source address",
        _ => "other FIB error",
    }
}

/// Departures remembered for `status`.
pub const MAX_DEPARTURES: u32 = 1024;

/// Why a backend left the server list; each reason's name is what the
/// log and `status` say.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepartureReason {
    /// It announced LEAVING (a clean stop).
    Leaving = 1,
    /// Its host left the group (IGMP leave), no key set.
    IgmpLeave = 2,
    /// With a key: its host left the group and no announcement answered
    /// the confirmation query.
    LeaveConfirmed = 3,
    /// More than N heartbeat timeouts in a row.
    MissedHeartbeats = 4,
}

impl DepartureReason {
    pub const ALL: [DepartureReason; 4] = [
        DepartureReason::Leaving,
        DepartureReason::IgmpLeave,
        DepartureReason::LeaveConfirmed,
        DepartureReason::MissedHeartbeats,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DepartureReason::Leaving => "LEAVING announcement",
            DepartureReason::IgmpLeave => "IGMP leave",
            DepartureReason::LeaveConfirmed => "IGMP leave confirmed",
            DepartureReason::MissedHeartbeats => "missed heartbeats",
        }
    }

    /// The reason stored as `raw`, if it is one.
    pub fn from_raw(raw: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as u32 == raw)
    }
}

/// When and why a backend left.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Departure {
    /// CLOCK_MONOTONIC ns.
    pub left_ns: u64,
    /// A `DepartureReason`.
    pub reason: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Departure>() == 16);

/// How many log records XDP wrote on one CPU in the current one-second
/// window, and how many it held back (see lb-ebpf's `events`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LogBudget {
    /// CLOCK_MONOTONIC ns when the window opened.
    pub window_start_ns: u64,
    pub written: u32,
    pub suppressed: u32,
}
const _: () = assert!(core::mem::size_of::<LogBudget>() == 16);

/// Group liveness as published by lb-user for `status`.
pub const GROUP_STATE_UNUSED: u8 = 0;
pub const GROUP_STATE_ALIVE: u8 = 1;
pub const GROUP_STATE_DEAD: u8 = 2;

/// Configuration and liveness of one group, written by lb-user.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GroupStatus {
    /// Group address, network order.
    pub group_addr: [u8; 4],
    /// Announcement port, host order.
    pub port: u16,
    /// `GROUP_STATE_*`.
    pub state: u8,
    pub _pad: u8,
    /// Query periods in a row without any report.
    pub silent_periods: u32,
    pub _pad2: u32,
    /// Queries sent since start.
    pub queries_sent: u64,
    /// CLOCK_MONOTONIC ns of the last query sent (0 if none).
    pub last_query_ns: u64,
}
const _: () = assert!(core::mem::size_of::<GroupStatus>() == 32);

/// What the program does with a packet: the XDP action it returns.
/// lb-ebpf checks these values against the kernel's at compile time.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Drop = 1,
    Pass = 2,
    Tx = 3,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Drop, Action::Pass, Action::Tx];

    pub const fn name(self) -> &'static str {
        match self {
            Action::Drop => "drop",
            Action::Pass => "pass",
            Action::Tx => "tx",
        }
    }
}

/// Declares a program's counters once: the enum, its `ALL`, each
/// counter's name and the action it ends in all come from one table.
macro_rules! counters {
    (
        $(#[$enum_doc:meta])*
        $enum:ident => $action_ty:ident {
            $( $(#[$doc:meta])* $variant:ident = $name:literal => $action:ident, )*
        }
    ) => {
        $(#[$enum_doc])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $enum {
            $( $(#[$doc])* $variant, )*
        }

        impl $enum {
            /// Every counter, in slot order.
            pub const ALL: &[$enum] = &[$($enum::$variant),*];

            /// The counter's name in `status` and docs/architecture.md.
            pub const fn name(self) -> &'static str {
                match self {
                    $($enum::$variant => $name,)*
                }
            }

            /// Each counter's doc comment, as `doc = "..."` lines, in slot
            /// order: the counters table of docs/architecture.md.
            pub const DOCS: &[&str] = &[$( concat!($(stringify!($doc), "\n"),*) ),*];

            /// The action of every packet counted here.
            #[inline(always)]
            pub const fn action(self) -> $action_ty {
                match self {
                    $($enum::$variant => $action_ty::$action,)*
                }
            }
        }
    };
}

counters! {
    /// Why the XDP program did what it did with a packet: every packet
    /// moves exactly one counter, and each counter belongs to one
    /// [`Action`], so the totals per action follow from the counters.
    Counter => Action {
    /// Announcement accepted (a refresh, or a LEAVING for no registered backend).
    AnnounceAccepted = "announce_accepted" => Drop,
    /// Announcement that inserted a new backend.
    AnnounceRegistered = "announce_registered" => Drop,
    /// Announcement with LEAVING that removed a backend.
    AnnounceLeaving = "announce_leaving" => Drop,
    /// Announcement dropped: the server list is full.
    AnnounceTableFull = "announce_table_full" => Drop,
    /// Announcement dropped: source address or MAC not a unicast host.
    AnnounceBadSource = "announce_bad_source" => Drop,
    /// Announcement dropped: source not in the `--allow` prefixes.
    AnnounceNotAllowed = "announce_not_allowed" => Drop,
    /// Announcement dropped: a fragment, or a UDP length that does not fit.
    AnnounceMalformed = "announce_malformed" => Drop,
    /// Announcement dropped: a key is set and it is not a whole v1 payload.
    AuthMissing = "auth_missing" => Drop,
    /// Announcement dropped: the tag matches no key.
    AuthBadTag = "auth_bad_tag" => Drop,
    /// Announcement dropped: its sequence is not above the last accepted one.
    AuthReplay = "auth_replay" => Drop,
    /// Announcement dropped: its sequence is outside the allowed clock skew.
    AuthStale = "auth_stale" => Drop,
    /// IGMP membership report for a configured group, passed on.
    IgmpReport = "igmp_report" => Pass,
    /// IGMP leave for a configured group, passed on.
    IgmpLeave = "igmp_leave" => Pass,
    /// Routed membership report for a configured group (protocol §4.4), counted
    /// for its liveness.
    RoutedReport = "routed_report" => Drop,
    /// Routed message to a group's port dropped: not a whole v1 report for
    /// that group, or (with a key) a tag that verifies under no key or a
    /// sequence outside the clock skew.
    RoutedRefused = "routed_refused" => Drop,
    /// Truncated or inconsistent Ethernet, IPv4, UDP or IGMP header: left
    /// to the kernel, which drops it; nothing is registered from it.
    Malformed = "malformed" => Pass,
    /// Not for us: passed untouched.
    Ignored = "ignored" => Pass,
    /// Client packet of a known flow sent to its backend.
    VipForwarded = "vip_forwarded" => Tx,
    /// Client packet that started a new flow (Maglev pick), sent to its backend.
    VipNewFlow = "vip_new_flow" => Tx,
    /// Client packet wrapped in IPIP and sent toward its backend (known flow).
    IpipForwarded = "ipip_forwarded" => Tx,
    /// Client packet that started a new flow, wrapped in IPIP and sent.
    IpipNewFlow = "ipip_new_flow" => Tx,
    /// Client packet for an IPIP backend longer than the interface's MTU
    /// (a GSO super-packet, which generic XDP sees whole): passed with its
    /// backend and next hop in its CPU's `GSO_HANDOFFS` slot to the GSO program, which
    /// wraps it ([`GsoCounter`] counts what became of it).
    IpipGsoHandoff = "ipip_gso_handoff" => Pass,
    /// Client packet dropped: the kernel's FIB has no usable next hop toward
    /// its IPIP backend (recorded in NEXT_HOP_ERRORS for lb-user to report
    /// and resolve).
    IpipNoNextHop = "ipip_no_next_hop" => Drop,
    /// Client packet too big once wrapped, with DF set: answered with an
    /// ICMP "fragmentation needed" carrying the usable MTU.
    IpipTooBig = "ipip_too_big" => Tx,
    /// Client packet too big once wrapped, with DF clear: dropped (XDP
    /// cannot fragment).
    IpipTooBigDropped = "ipip_too_big_dropped" => Drop,
    /// Client packet dropped: the frame could not be grown or cut (no headroom).
    IpipNoRoom = "ipip_no_room" => Drop,
    /// Client packet dropped: the service has no registered backend.
    VipNoBackend = "vip_no_backend" => Drop,
    /// Client packet to a VIP service dropped: fragment, IP options or a
    /// truncated TCP or UDP header.
    VipMalformed = "vip_malformed" => Drop,
    }
}

/// Name of the agent's decapsulation program (protocol §7) in its object.
pub const DECAP_PROGRAM_NAME: &str = "agent_decap";
/// Most LBs whose IPIP an agent accepts.
pub const MAX_DECAP_LBS: u32 = 64;

/// The maps of the agent's decapsulation program, declared once like
/// [`program_maps!`] (same row syntax).
#[macro_export]
macro_rules! decap_maps {
    ($callback:ident) => {
        $callback! {
            /// LB addresses (network order) learned from queries: IPIP from
            /// them is stripped. Written by backend-agent.
            DECAP_LBS / lbs: HashMap<[u8; 4], u8>[$crate::MAX_DECAP_LBS];
            /// The backend's own address (network order), slot 0: only IPIP
            /// to it is stripped. Written by backend-agent.
            DECAP_LOCAL / local: Array<[u8; 4]>[1];
            /// Packet counters (per CPU), indexed by [`DecapCounter`]($crate::DecapCounter).
            DECAP_COUNTERS / counters: PerCpuArray<u64>[$crate::DecapCounter::ALL.len() as u32];
        }
    };
}

/// What a tc program does with a packet: the action it returns
/// (`TC_ACT_OK`, `TC_ACT_SHOT`, `TC_ACT_REDIRECT`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcAction {
    Pass = 0,
    Drop = 2,
    Redirect = 7,
}

counters! {
    /// What the LB's GSO program did with a packet on the interface's
    /// ingress (only where XDP runs in generic mode).
    GsoCounter => TcAction {
    /// A super-packet XDP handed over: wrapped in IPIP (the GSO size
    /// lowered by the outer header, so that each segment fits the MTU)
    /// and sent out of the interface toward its next hop.
    Wrapped = "gso_wrapped" => Redirect,
    /// A super-packet XDP handed over that could not be grown or
    /// rewritten (`bpf_skb_adjust_room` refused it): dropped.
    CannotWrap = "gso_cannot_wrap" => Drop,
    /// Any other packet: left to the stack.
    NotHandedOver = "gso_not_handed_over" => Pass,
    }
}

counters! {
    /// Why the agent's decapsulation program did what it did with a packet.
    DecapCounter => TcAction {
    /// IPIP from a known LB to this backend: outer header stripped, the
    /// client's packet passed up.
    Decapsulated = "decapsulated" => Pass,
    /// IPIP to this backend from a source that is no LB it learned: dropped,
    /// never seen by the stack.
    UnknownSource = "unknown_source" => Drop,
    /// IPIP to another address: left alone.
    NotForUs = "not_for_us" => Pass,
    /// IPIP to this backend that cannot be stripped (a fragment, IP options
    /// on the outer header, no whole inner IPv4 header): dropped.
    Malformed = "malformed" => Drop,
    /// Not IPIP: left alone.
    NotIpip = "not_ipip" => Pass,
    }
}

#[cfg(feature = "user")]
mod pod {
    macro_rules! pod {
        ($($ty:ident),*) => {
            $(
                // SAFETY: a repr(C) struct of plain integers and byte arrays
                // whose padding is explicit (size asserted above).
                unsafe impl aya::Pod for super::$ty {}
            )*
        };
    }
    pod!(
        BackendKey,
        BackendEntry,
        AgingState,
        GroupReports,
        GroupStatus,
        ServiceKey,
        Service,
        FlowKey,
        Flow,
        FlowSlot,
        FlowBucket,
        AuthKey,
        AuthClock,
        LogBudget,
        Departure,
        NextHopError,
        PendingLeave,
        NextHop,
        CoarseClock,
        GsoHandoff
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_fill_their_slots_in_order_with_unique_names() {
        for (slot, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(*counter as usize, slot, "{}", counter.name());
        }
        let mut names: Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len(), "duplicate counter name");
    }

    #[test]
    fn a_flow_has_two_buckets_inside_any_table() {
        for buckets in [1, 2, 3, 1000, flow_buckets(DEFAULT_MAX_FLOWS), u32::MAX] {
            for hash in [0, 1, u64::MAX, 0x8000_0000_0000_0000, 0xdead_beef_cafe_f00d] {
                let [a, b] = flow_buckets_of(hash, buckets);
                assert!(a < buckets && b < buckets, "{hash:x} in {buckets}");
            }
        }
        // Two slots per flow, in whole buckets.
        assert_eq!(flow_buckets(1), 1);
        assert_eq!(flow_buckets(4096), 2048);
        assert_eq!(flow_buckets(4097), 2049);
    }

    #[test]
    fn the_slot_check_covers_the_backend_and_the_mac() {
        let key = FlowKey {
            src: [10, 0, 0, 50],
            dst: [10, 0, 0, 100],
            src_port: 40000u16.to_be_bytes(),
            dst_port: 80u16.to_be_bytes(),
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        };
        let hash = flow_hash64(&key);
        let (backend, mac) = ([10, 0, 0, 11], [2, 0xbe, 0, 0, 0, 1]);
        let check = flow_check(hash, backend, mac);
        assert_ne!(check, flow_check(hash, [10, 0, 0, 12], mac));
        assert_ne!(check, flow_check(hash, backend, [2, 0xbe, 0, 0, 0, 2]));
        assert_ne!(check, flow_check(hash ^ 1, backend, mac));
        assert_eq!(flow_hash(&key), hash as u32);
        assert_ne!(key.words(), [0; 2], "a flow's key is never an empty slot's");
    }

    /// The text of doc attributes (`doc = r" text"`, or `doc = r#" text
    /// with "quotes""#`, as `stringify!` gives them, which may break a
    /// line anywhere), joined.
    fn doc_text(attrs: &[&str]) -> String {
        attrs
            .iter()
            .flat_map(|a| a.split("doc =").skip(1))
            .filter_map(|raw| {
                let raw = raw.trim().strip_prefix('r')?.trim_matches('#');
                Some(raw.strip_prefix('"')?.strip_suffix('"')?.trim())
            })
            .collect::<Vec<_>>()
            .join(" ")
            // An intra-doc link's target means nothing on the page.
            .split("]($crate::")
            .enumerate()
            .map(|(i, part)| {
                if i == 0 {
                    part
                } else {
                    part.split_once(')').map_or(part, |(_, rest)| rest)
                }
            })
            .collect::<Vec<_>>()
            .join("]")
    }

    /// A declaration's tokens as the page shows them: no `$crate::`.
    fn tokens(text: &str) -> String {
        text.replace("$crate ::", "")
            .replace(" :: ", "::")
            .replace(":: ", "::")
            .replace(" <", "<")
            .replace("< ", "<")
            .replace(" >", ">")
            .replace(" (", "(")
            .replace("( ", "(")
            .replace(" )", ")")
            .replace(" .", ".")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn maps_table() -> String {
        macro_rules! rows {
            ($( $(#[$doc:meta])* $name:ident / $field:ident : $kind:ident <$($ty:ty),+> [$cap:expr]; )*) => {
                vec![$( (
                    stringify!($name),
                    stringify!($kind),
                    vec![$(stringify!($ty)),+],
                    stringify!($cap),
                    doc_text(&[$(stringify!($doc)),*]),
                ) ),*]
            };
        }
        let mut table = String::from(
            "| map | kind | key -> value | default capacity | what it holds |\n|---|---|---|---|---|\n",
        );
        for (name, kind, types, capacity, doc) in crate::program_maps!(rows) {
            let types: Vec<String> = types.iter().map(|t| tokens(t)).collect();
            let entry = match types.as_slice() {
                [value] => format!("index -> `{value}`"),
                [key, value] => format!("`{key}` -> `{value}`"),
                _ => unreachable!("a map has a key and a value, or a value"),
            };
            table += &format!(
                "| `{name}` | {kind} | {entry} | `{}` | {doc} |\n",
                tokens(capacity)
            );
        }
        table
    }

    fn counters_table() -> String {
        let mut table =
            String::from("| program | counter | action | what it counts |\n|---|---|---|---|\n");
        let xdp = Counter::ALL.iter().map(|c| {
            (
                "XDP",
                c.name(),
                c.action().name(),
                Counter::DOCS[*c as usize],
            )
        });
        let tc_action = |a: TcAction| match a {
            TcAction::Pass => "pass",
            TcAction::Drop => "drop",
            TcAction::Redirect => "redirect",
        };
        let gso = GsoCounter::ALL.iter().map(|c| {
            (
                "GSO (tc)",
                c.name(),
                tc_action(c.action()),
                GsoCounter::DOCS[*c as usize],
            )
        });
        let decap = DecapCounter::ALL.iter().map(|c| {
            (
                "agent decap (tc)",
                c.name(),
                tc_action(c.action()),
                DecapCounter::DOCS[*c as usize],
            )
        });
        for (program, name, action, doc) in xdp.chain(gso).chain(decap) {
            table += &format!(
                "| {program} | `{name}` | {action} | {} |\n",
                doc_text(&[doc])
            );
        }
        table
    }

    /// The tables of docs/architecture.md that restate declarations are
    /// generated from them: `XDP_LB_WRITE_DOCS=1 cargo test -p lb-common`
    /// writes them into the page; otherwise a difference fails.
    #[test]
    fn the_architecture_pages_tables_match_the_declarations() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/architecture.md");
        let mut page = std::fs::read_to_string(path).expect("docs/architecture.md");
        for (name, table) in [("maps", maps_table()), ("counters", counters_table())] {
            let start = format!("<!-- generated: {name} -->\n");
            let from = page.find(&start).expect("the table's start marker") + start.len();
            let to = from
                + page[from..]
                    .find("<!-- end -->")
                    .expect("the table's end marker");
            if std::env::var_os("XDP_LB_WRITE_DOCS").is_some() {
                page.replace_range(from..to, &table);
            } else {
                assert_eq!(
                    page[from..to],
                    table,
                    "docs/architecture.md: the {name} table differs from its declaration; XDP_LB_WRITE_DOCS=1 cargo test -p lb-common writes it"
                );
            }
        }
        if std::env::var_os("XDP_LB_WRITE_DOCS").is_some() {
            std::fs::write(path, page).expect("writing docs/architecture.md");
        }
    }

    #[test]
    fn map_names_are_unique() {
        let mut names = map_name::ALL.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), map_name::ALL.len());
    }
}
