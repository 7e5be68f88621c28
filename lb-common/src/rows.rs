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
/// service. Written by lb-user; a row that names no backend has both
/// addresses 0. The IPv4 address comes first, beside the service: the
/// IPv4 path reads those 8 bytes only.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceBackend {
    /// An IPv4 backend's address, network order; 0 for an IPv6 one.
    pub addr: [u8; 4],
    /// The service's id (`Service::service_id`).
    pub service_id: u32,
    /// An IPv6 backend's address, network order; 0 for an IPv4 one.
    pub addr6: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<ServiceBackend>() == 24);

impl ServiceBackend {
    /// The row of backend `addr` (16 bytes, IPv4 IPv4-mapped, as
    /// `crate::addr` writes it) in service `service_id`.
    pub fn naming(addr: [u8; 16], service_id: u32) -> Self {
        match crate::addr::unmapped(&addr) {
            Some(v4) => Self {
                addr: v4,
                service_id,
                addr6: [0; 16],
            },
            None => Self {
                addr: [0; 4],
                service_id,
                addr6: addr,
            },
        }
    }

    /// The backend's address in 16 bytes (IPv4 IPv4-mapped); all zero
    /// for none.
    #[inline(always)]
    pub fn addr16(&self) -> [u8; 16] {
        if self.addr != [0; 4] {
            crate::addr::mapped(self.addr)
        } else {
            self.addr6
        }
    }

    /// Whether the row names a backend.
    #[inline(always)]
    pub fn is_backend(&self) -> bool {
        self.addr != [0; 4] || self.addr6 != [0; 16]
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
