//! Services (a port on a VIP) and their Maglev tables.

/// Most services one LB instance serves.
pub const MAX_SERVICES: u32 = 16;
/// Entries of the Maglev pool (4 bytes each: 32 MiB, allocated when the
/// program loads): every service's two table slots are ranges of it.
pub const MAGLEV_POOL: u32 = 1 << 23;
/// Largest Maglev table: the largest prime below 2^21, so that a service's
/// two slots take at most half of the pool. At 65,536 backends it still
/// gives each backend 32 entries.
pub const MAX_MAGLEV_SIZE: u32 = 2_097_143;

/// IP protocol numbers of the forwarded transports.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// A service's transport as written in flags, `status` and metrics.
pub const fn transport_name(proto: u8) -> &'static str {
    if proto == IPPROTO_TCP { "tcp" } else { "udp" }
}

/// A service: a transport port on a virtual IP of either family.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// Virtual IP, network order, IPv4 IPv4-mapped (`addr`).
    pub vip: [u8; 16],
    /// Port, host order.
    pub port: u16,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 20);

impl ServiceKey {
    /// The VIP.
    pub fn vip(&self) -> core::net::IpAddr {
        crate::addr::to_ip(self.vip)
    }

    /// The key of an IPv4 VIP's service in `SERVICES`.
    pub fn v4(&self) -> Option<ServiceKey4> {
        Some(ServiceKey4 {
            vip: crate::addr::unmapped(&self.vip)?,
            port: self.port,
            proto: self.proto,
            _pad: 0,
        })
    }
}

/// An IPv4 VIP's service as `SERVICES` and `PREVIOUS_SERVICES` key it:
/// 8 bytes, hashed on every new IPv4 flow (a 20-byte key made that path
/// 18% slower); IPv6 VIPs' services are keyed by [`ServiceKey`] in
/// `SERVICES6` and `PREVIOUS_SERVICES6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey4 {
    /// Virtual IP, network order.
    pub vip: [u8; 4],
    /// Port, host order.
    pub port: u16,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<ServiceKey4>() == 8);

impl ServiceKey4 {
    /// The same service in 16-byte form.
    pub fn widened(&self) -> ServiceKey {
        ServiceKey {
            vip: crate::addr::mapped(self.vip),
            port: self.port,
            proto: self.proto,
            _pad: 0,
        }
    }
}

/// How XDP finds a service's backends.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Service {
    /// The service's number, below [`MAX_SERVICES`]: its rows name it.
    pub service_id: u32,
    /// Group whose registered backends serve it.
    pub group_id: u32,
    /// The slot (0 or 1) XDP reads; lb-user fills the other, then flips this.
    pub active_slot: u32,
    /// 1 if the group's backends are IPv6 (its rows name IPv6 addresses):
    /// `xdp_lb6` forwards its packets, whatever the VIP's family.
    pub backends_ipv6: u32,
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

/// The bit of a VIP in the VIP filter, from its last two bytes (`low`),
/// which differ most between the addresses of one site, of either family.
#[inline(always)]
pub const fn vip_filter_bit(low: [u8; 2]) -> u64 {
    1 << ((low[1] ^ low[0]) & 63)
}
