//! The address of one family as the server lists and forwarding tables
//! hold it: the tables of a service are built over its group's family.
use std::{
    fmt::{Debug, Display},
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

pub trait Address: Copy + Eq + Ord + Hash + Debug + Display + Send + Sync + 'static {
    /// No backend: an empty table entry.
    const NONE: Self;
    /// An address no backend has: what a slot's copy of its table holds
    /// where the map may hold a row that no longer names that entry's
    /// backend, so that the next table written there rewrites it.
    const STALE: Self;
    /// The address's bytes, network order.
    type Octets: AsRef<[u8]>;
    fn octets(&self) -> Self::Octets;
    /// The address as a row names it (`lb_common::addr`).
    fn row_addr(&self) -> [u8; 16];
    fn ip(&self) -> IpAddr;
}

impl Address for Ipv4Addr {
    const NONE: Self = Ipv4Addr::UNSPECIFIED;
    const STALE: Self = Ipv4Addr::BROADCAST;
    type Octets = [u8; 4];
    fn octets(&self) -> [u8; 4] {
        Ipv4Addr::octets(self)
    }
    fn row_addr(&self) -> [u8; 16] {
        lb_common::addr::mapped(Ipv4Addr::octets(self))
    }
    fn ip(&self) -> IpAddr {
        IpAddr::V4(*self)
    }
}

impl Address for Ipv6Addr {
    const NONE: Self = Ipv6Addr::UNSPECIFIED;
    const STALE: Self = Ipv6Addr::new(
        0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
    );
    type Octets = [u8; 16];
    fn octets(&self) -> [u8; 16] {
        Ipv6Addr::octets(self)
    }
    fn row_addr(&self) -> [u8; 16] {
        Ipv6Addr::octets(self)
    }
    fn ip(&self) -> IpAddr {
        IpAddr::V6(*self)
    }
}
