//! Addresses of either family in one 16-byte form: an IPv6 address as
//! is, an IPv4 address IPv4-mapped (`::ffff:a.b.c.d`, RFC 4291 2.5.5.2).
//! Maps that name a VIP or a backend of either family (services, rows)
//! hold this form; no IPv6 address a backend or a VIP may have is
//! IPv4-mapped (`is_global_unicast6` refuses them).

/// The first 12 bytes of an IPv4-mapped address.
const MAPPED_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// `addr` (IPv4, network order) IPv4-mapped.
#[inline(always)]
pub const fn mapped(addr: [u8; 4]) -> [u8; 16] {
    let [a, b, c, d] = addr;
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d]
}

/// The IPv4 address `addr` maps, if it is IPv4-mapped.
#[inline(always)]
pub fn unmapped(addr: &[u8; 16]) -> Option<[u8; 4]> {
    let [prefix @ .., a, b, c, d] = *addr;
    (prefix == MAPPED_PREFIX).then_some([a, b, c, d])
}

/// `addr` in the 16-byte form.
pub const fn from_ip(addr: core::net::IpAddr) -> [u8; 16] {
    match addr {
        core::net::IpAddr::V4(v4) => mapped(v4.octets()),
        core::net::IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address of the 16-byte form `addr`.
pub fn to_ip(addr: [u8; 16]) -> core::net::IpAddr {
    core::net::Ipv6Addr::from(addr).to_canonical()
}

#[cfg(test)]
mod tests {
    use core::net::IpAddr;

    use super::*;

    #[test]
    fn either_family_round_trips() {
        for addr in ["10.0.0.5", "2001:db8::5", "::", "0.0.0.0"] {
            let addr: IpAddr = addr.parse().unwrap();
            assert_eq!(to_ip(from_ip(addr)), addr);
        }
        assert_eq!(unmapped(&mapped([10, 0, 0, 5])), Some([10, 0, 0, 5]));
        let v6: core::net::Ipv6Addr = "2001:db8::5".parse().unwrap();
        assert_eq!(unmapped(&v6.octets()), None);
    }
}
