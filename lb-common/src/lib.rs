//! Types and constants shared by the XDP program and userspace.
//!
//! Every map value is `#[repr(C)]` with explicit padding fields, so the kernel
//! and userspace agree on the layout byte for byte; sizes are checked at
//! compile time.
#![cfg_attr(not(any(feature = "user", test)), no_std)]

#[cfg(feature = "user")]
pub mod cli;
#[cfg(feature = "user")]
pub mod igmp_socket;
pub mod siphash;
#[cfg(feature = "user")]
pub mod system;
pub mod wire;

/// Most groups one LB instance serves.
pub const MAX_GROUPS: u32 = 16;

/// Default capacity of the server list.
pub const DEFAULT_MAX_BACKENDS: u32 = 65536;

/// Names under which the maps are pinned (also their names in BTF).
pub mod map_name {
    /// The available-server list: `BackendKey -> BackendEntry`, written by XDP.
    pub const BACKENDS: &str = "BACKENDS";
    /// Aging state of each backend: `BackendKey -> AgingState`, written by lb-user.
    pub const BACKEND_AGING: &str = "BACKEND_AGING";
    /// Announcement port (host order) -> group id.
    pub const ANNOUNCE_PORTS: &str = "ANNOUNCE_PORTS";
    /// Group address -> group id.
    pub const GROUP_ADDRS: &str = "GROUP_ADDRS";
    /// Per-CPU IGMP report statistics, indexed by group id, written by XDP.
    pub const GROUP_REPORTS: &str = "GROUP_REPORTS";
    /// Group configuration and liveness, indexed by group id, written by lb-user.
    pub const GROUP_STATUS: &str = "GROUP_STATUS";
    /// Per-CPU packet counters, indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// Virtual IPs (network order) -> number of services on them.
    pub const VIPS: &str = "VIPS";
    /// `ServiceKey -> Service`, written by lb-user.
    pub const SERVICES: &str = "SERVICES";
    /// Maglev lookup tables: two slots per service, backend address per entry.
    pub const MAGLEV: &str = "MAGLEV";
    /// Connection table (LRU): `FlowKey -> Flow`, written by XDP.
    pub const FLOWS: &str = "FLOWS";
    /// Source prefixes allowed to announce (LPM trie), written by lb-user.
    pub const ANNOUNCE_ALLOW: &str = "ANNOUNCE_ALLOW";
    /// Up to two SipHash keys (`AuthKey`), written by lb-user.
    pub const AUTH_KEYS: &str = "AUTH_KEYS";
    /// The wall clock as XDP sees it (`AuthClock`), kept current by lb-user.
    pub const AUTH_CLOCK: &str = "AUTH_CLOCK";
    /// Last accepted sequence per backend (LRU), written by XDP; outlives
    /// removal so that a replayed announcement cannot bring a backend back.
    pub const LAST_SEQUENCE: &str = "LAST_SEQUENCE";
}

/// Name of the global that requires authenticated announcements (1) or not (0).
pub const GLOBAL_AUTH_ON: &str = "AUTH_ON";

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

/// Name of the global that turns the source allowlist on (1) or off (0).
pub const GLOBAL_ALLOWLIST_ON: &str = "ALLOWLIST_ON";

/// Most services one LB instance serves.
pub const MAX_SERVICES: u32 = 16;
/// Largest Maglev table; each service has two slots of this many entries.
pub const MAX_MAGLEV_SIZE: u32 = 65537;
/// Entries of the MAGLEV array.
pub const MAGLEV_ENTRIES: u32 = MAX_SERVICES * 2 * MAX_MAGLEV_SIZE;
/// Default capacity of the connection table.
pub const DEFAULT_MAX_FLOWS: u32 = 262_144;

/// Name of the global holding the LB interface's MAC address.
pub const GLOBAL_LB_MAC: &str = "LB_MAC";

/// IP protocol numbers of the forwarded transports.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

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
    /// Index of the service's two table slots in `MAGLEV`.
    pub service_id: u32,
    /// Group whose registered backends serve it.
    pub group_id: u32,
    /// Entries in use in each slot (a prime <= MAX_MAGLEV_SIZE).
    pub table_size: u32,
    /// The slot (0 or 1) XDP reads; lb-user fills the other, then flips this.
    pub active_slot: u32,
}
const _: () = assert!(core::mem::size_of::<Service>() == 16);

impl Service {
    /// Index in `MAGLEV` of `entry` of `slot`.
    #[inline(always)]
    pub const fn maglev_index(&self, slot: u32, entry: u32) -> u32 {
        (self.service_id * 2 + slot) * MAX_MAGLEV_SIZE + entry
    }
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

/// The backend a flow is pinned to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Backend address, network order.
    pub backend: [u8; 4],
    pub service_id: u32,
    /// CLOCK_MONOTONIC ns when the flow was assigned.
    pub created_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Flow>() == 16);

/// The flow hash XDP indexes the Maglev table with. Shared so that tests
/// can predict where a flow lands.
#[inline(always)]
pub fn flow_hash(key: &FlowKey) -> u32 {
    let addrs =
        u64::from(u32::from_ne_bytes(key.src)) << 32 | u64::from(u32::from_ne_bytes(key.dst));
    let rest = u64::from(u16::from_ne_bytes(key.src_port)) << 24
        | u64::from(u16::from_ne_bytes(key.dst_port)) << 8
        | u64::from(key.proto);
    // splitmix64 finalizer over both words.
    let mut h = addrs ^ rest.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (h ^ (h >> 31)) as u32
}

/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "xdp_lb";
/// Name of the do-nothing program the benchmarks measure as their floor.
pub const FLOOR_PROGRAM_NAME: &str = "xdp_floor";
/// Name of the program that only returns XDP_TX: the forwarding benchmark's ceiling.
pub const TX_FLOOR_PROGRAM_NAME: &str = "xdp_tx_floor";

/// Name of the global holding the LB's own IPv4 address (network order bytes).
pub const GLOBAL_LB_ADDR: &str = "LB_ADDR";

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
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) of the last accepted announcement.
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

/// Control-plane aging state of one backend (SPEC 5.3).
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

/// Per-CPU IGMP statistics of one group, written by XDP.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GroupReports {
    /// Membership reports (v1, v2, v3 records other than leaves) seen.
    pub reports: u64,
    /// Leaves (IGMPv2 leave, IGMPv3 change to include nothing) seen.
    pub leaves: u64,
    /// CLOCK_MONOTONIC ns of the last report on this CPU.
    pub last_report_ns: u64,
}
const _: () = assert!(core::mem::size_of::<GroupReports>() == 24);

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

/// Packet counters, one slot each in the per-CPU `COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Announcement accepted (new or refresh).
    AnnounceAccepted = 0,
    /// Announcement that inserted a new backend.
    AnnounceRegistered,
    /// Announcement with LEAVING that removed a backend.
    AnnounceLeaving,
    /// Announcement dropped: the server list is full.
    AnnounceTableFull,
    /// Announcement dropped: source address or MAC not a unicast host.
    AnnounceBadSource,
    /// Announcement dropped: source not in the `--allow` prefixes.
    AnnounceNotAllowed,
    /// Announcement dropped: a key is set and it is not a whole v1 payload.
    AuthMissing,
    /// Announcement dropped: the tag matches no key.
    AuthBadTag,
    /// Announcement dropped: its sequence is not above the last accepted one.
    AuthReplay,
    /// Announcement dropped: its sequence is outside the allowed clock skew.
    AuthStale,
    /// IGMP membership report for a configured group.
    IgmpReport,
    /// IGMP leave for a configured group.
    IgmpLeave,
    /// Truncated or inconsistent headers, fragments to the announcement port.
    Malformed,
    /// Not for us: passed untouched.
    Ignored,
    /// Client packet to a service sent to a backend with XDP_TX.
    VipForwarded,
    /// Client packet that started a new flow (Maglev pick).
    VipNewFlow,
    /// Client packet dropped: the service has no registered backend.
    VipNoBackend,
    /// Client packet to a VIP dropped: fragment, IP options or truncated.
    VipMalformed,
}

impl Counter {
    pub const ALL: [Counter; 18] = [
        Counter::AnnounceAccepted,
        Counter::AnnounceRegistered,
        Counter::AnnounceLeaving,
        Counter::AnnounceTableFull,
        Counter::AnnounceBadSource,
        Counter::AnnounceNotAllowed,
        Counter::AuthMissing,
        Counter::AuthBadTag,
        Counter::AuthReplay,
        Counter::AuthStale,
        Counter::IgmpReport,
        Counter::IgmpLeave,
        Counter::Malformed,
        Counter::Ignored,
        Counter::VipForwarded,
        Counter::VipNewFlow,
        Counter::VipNoBackend,
        Counter::VipMalformed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Counter::AnnounceAccepted => "announce_accepted",
            Counter::AnnounceRegistered => "announce_registered",
            Counter::AnnounceLeaving => "announce_leaving",
            Counter::AnnounceTableFull => "announce_table_full",
            Counter::AnnounceBadSource => "announce_bad_source",
            Counter::AnnounceNotAllowed => "announce_not_allowed",
            Counter::AuthMissing => "auth_missing",
            Counter::AuthBadTag => "auth_bad_tag",
            Counter::AuthReplay => "auth_replay",
            Counter::AuthStale => "auth_stale",
            Counter::IgmpReport => "igmp_report",
            Counter::IgmpLeave => "igmp_leave",
            Counter::Malformed => "malformed",
            Counter::Ignored => "ignored",
            Counter::VipForwarded => "vip_forwarded",
            Counter::VipNewFlow => "vip_new_flow",
            Counter::VipNoBackend => "vip_no_backend",
            Counter::VipMalformed => "vip_malformed",
        }
    }
}

/// Number of slots in `COUNTERS`.
pub const COUNTER_SLOTS: u32 = Counter::ALL.len() as u32;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are repr(C) plain integers and byte arrays without implicit padding.
    unsafe impl aya::Pod for super::BackendKey {}
    unsafe impl aya::Pod for super::BackendEntry {}
    unsafe impl aya::Pod for super::AgingState {}
    unsafe impl aya::Pod for super::GroupReports {}
    unsafe impl aya::Pod for super::GroupStatus {}
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::Service {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::Flow {}
    unsafe impl aya::Pod for super::AuthKey {}
    unsafe impl aya::Pod for super::AuthClock {}
}
