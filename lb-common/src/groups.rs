//! Groups: their report statistics and liveness.

/// Most groups one LB instance serves.
pub const MAX_GROUPS: u32 = 16;

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

/// Group liveness as published by lb-user for `status`.
pub const GROUP_STATE_UNUSED: u8 = 0;
pub const GROUP_STATE_ALIVE: u8 = 1;
pub const GROUP_STATE_DEAD: u8 = 2;

/// Configuration and liveness of one group, written by lb-user.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GroupStatus {
    /// Group address, network order: IPv6, or IPv4-mapped (`::ffff:a.b.c.d`).
    pub group_addr: [u8; 16],
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
const _: () = assert!(core::mem::size_of::<GroupStatus>() == 48);

impl GroupStatus {
    /// The group's address, of its own family.
    pub fn group(&self) -> core::net::IpAddr {
        crate::addr::to_ip(self.group_addr)
    }

    /// The status of group `group` with announcement port `port` as
    /// configured: alive, nothing counted yet.
    pub fn configured(group: core::net::IpAddr, port: u16) -> Self {
        Self {
            group_addr: crate::addr::from_ip(group),
            port,
            state: GROUP_STATE_ALIVE,
            ..Self::default()
        }
    }
}
