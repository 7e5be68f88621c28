//! Rows: one backend of one service, as XDP's Maglev entries and
//! connection-table slots name it (a 4-byte index, whatever the size of
//! the backend's address), with what it carried.

use crate::MAX_SERVICES;

/// Rows lb-user can give out per server-list entry, by default: every
/// registered backend in two services (a group serving two ports).
pub const ROWS_PER_BACKEND: u32 = 2;

/// The first row that names a backend. Row `s` below it (one per service
/// id) names none and holds what service `s`'s departed backends carried:
/// lb-user folds a row's counts into it when it frees the row, so a
/// service's totals never go down. Row 0 is also an empty Maglev entry.
pub const FIRST_BACKEND_ROW: u32 = MAX_SERVICES;

/// Rows of the row maps for a server list of `max_backends`.
pub const fn backend_rows(max_backends: u32) -> u32 {
    FIRST_BACKEND_ROW + max_backends.saturating_mul(ROWS_PER_BACKEND)
}

/// What a row names: a backend (by address, of either family) of a
/// service. Written by lb-user; a row that names no backend has address 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceBackend {
    /// The backend's address, network order, IPv4 IPv4-mapped (`addr`).
    pub addr: [u8; 16],
    /// The service's id (`Service::service_id`).
    pub service_id: u32,
}
const _: () = assert!(core::mem::size_of::<ServiceBackend>() == 20);

impl ServiceBackend {
    /// Whether the row names a backend.
    #[inline(always)]
    pub fn is_backend(&self) -> bool {
        self.addr != [0; 16]
    }
}

/// What a row carried, per CPU: written by XDP for every packet it
/// forwards to the row's backend, summed by lb-user.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Traffic {
    pub packets: u64,
    /// Bytes of the client's packets as they arrived (IP header and
    /// payload, before any IPIP header).
    pub bytes: u64,
    /// Packets that started a flow (a Maglev pick).
    pub new_flows: u64,
}
const _: () = assert!(core::mem::size_of::<Traffic>() == 24);

impl core::ops::AddAssign for Traffic {
    fn add_assign(&mut self, other: Self) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.new_flows += other.new_flows;
    }
}
