//! The server list: a registered backend, its aging, its leave and departure.

/// Default capacity of the server list.
pub const DEFAULT_MAX_BACKENDS: u32 = 65536;

/// Key of the server list: one backend in one group.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackendKey {
    pub group_id: u32,
    /// The backend's unicast IPv4 address, network order.
    pub addr: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<BackendKey>() == 8);

/// Key of the IPv6 server list: one IPv6 backend in one group. A map of
/// its own: a 20-byte key for both families made the IPv4 refresh 25%
/// and new-flow paths 21% slower (docs/benchmarks.md).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackendKey6 {
    pub group_id: u32,
    /// The backend's unicast IPv6 address, network order.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<BackendKey6>() == 20);

/// Global unicast IPv6 (2000::/3) or unique-local (fc00::/7): what a
/// backend announces from and the LB's IPv6 address (protocol §9); never
/// link-local, multicast, loopback or unspecified.
#[inline(always)]
pub fn is_global_unicast6(addr: &[u8; 16]) -> bool {
    addr[0] & 0xe0 == 0x20 || addr[0] & 0xfe == 0xfc
}

/// An IPv6 backend's MAC in a group: its host's MLD leaves come from its
/// link-local address, so the LB ties them to the backend by the MAC its
/// announcements came from (protocol §9).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacKey {
    pub group_id: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<MacKey>() == 12);

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
    /// CLOCK_MONOTONIC_COARSE ns when XDP registered the backend: backends
    /// registered long enough ago make the previous tables (the second
    /// chance, protocol §7).
    pub registered_ns: u64,
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
const _: () = assert!(core::mem::size_of::<BackendEntry>() == 48);

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
    /// CLOCK_MONOTONIC ns the backend registered at by the age its
    /// registering announcement carried (protocol §4.3), when that is
    /// earlier than XDP's own stamp; 0 when it carried none.
    pub registered_ns: u64,
}
const _: () = assert!(core::mem::size_of::<AgingState>() == 32);

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
    /// Its host left the IPv6 group (an MLD leave from its MAC), no key set.
    MldLeave = 5,
    /// An MLD leave held with a key set, not refuted by an announcement
    /// after the confirmation query (protocol §9).
    MldLeaveConfirmed = 6,
}

impl DepartureReason {
    pub const ALL: [DepartureReason; 6] = [
        DepartureReason::Leaving,
        DepartureReason::IgmpLeave,
        DepartureReason::LeaveConfirmed,
        DepartureReason::MissedHeartbeats,
        DepartureReason::MldLeave,
        DepartureReason::MldLeaveConfirmed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DepartureReason::Leaving => "LEAVING announcement",
            DepartureReason::IgmpLeave => "IGMP leave",
            DepartureReason::LeaveConfirmed => "IGMP leave confirmed",
            DepartureReason::MissedHeartbeats => "missed heartbeats",
            DepartureReason::MldLeave => "MLD leave",
            DepartureReason::MldLeaveConfirmed => "MLD leave confirmed",
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
