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
}

/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "xdp_lb";

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
    /// IGMP membership report for a configured group.
    IgmpReport,
    /// IGMP leave for a configured group.
    IgmpLeave,
    /// Truncated or inconsistent headers, fragments to the announcement port.
    Malformed,
    /// Not for us: passed untouched.
    Ignored,
}

impl Counter {
    pub const ALL: [Counter; 9] = [
        Counter::AnnounceAccepted,
        Counter::AnnounceRegistered,
        Counter::AnnounceLeaving,
        Counter::AnnounceTableFull,
        Counter::AnnounceBadSource,
        Counter::IgmpReport,
        Counter::IgmpLeave,
        Counter::Malformed,
        Counter::Ignored,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Counter::AnnounceAccepted => "announce_accepted",
            Counter::AnnounceRegistered => "announce_registered",
            Counter::AnnounceLeaving => "announce_leaving",
            Counter::AnnounceTableFull => "announce_table_full",
            Counter::AnnounceBadSource => "announce_bad_source",
            Counter::IgmpReport => "igmp_report",
            Counter::IgmpLeave => "igmp_leave",
            Counter::Malformed => "malformed",
            Counter::Ignored => "ignored",
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
}
