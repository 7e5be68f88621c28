//! The raw ICMPv6 socket of MLD (protocol §9), IPv6's `igmp_socket`: the
//! LB sends its queries from it and agents receive queries and send
//! reports on it. A Linux host ignores the LB's query (its address field
//! is unicast), so both ends speak MLD from user space. Messages leave
//! from the interface's link-local address with hop limit 1 and the
//! Hop-by-Hop Router Alert, as MLD requires; the kernel fills in the
//! ICMPv6 checksum and checks it on receipt.
use std::{
    io,
    mem::MaybeUninit,
    net::{Ipv6Addr, SocketAddrV6},
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
};

use lb_common::mld::{HOP_BY_HOP_ROUTER_ALERT_MLD, MldMessage, parse_mld};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::igmp_socket::set_option_bytes;

/// The Hop-by-Hop header the socket's messages carry: next header and
/// length (the kernel fills both in), Router Alert (MLD), PadN.
const HOP_BY_HOP: [u8; 8] = {
    let [a, b, c, d] = HOP_BY_HOP_ROUTER_ALERT_MLD;
    [0, 0, a, b, c, d, 1, 0]
};

/// A raw ICMPv6 socket bound to one interface's link-local address.
pub struct MldSocket {
    socket: Socket,
    ifindex: u32,
}

impl AsFd for MldSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// An MLD message received on the socket, with its IPv6 source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received6 {
    pub source: Ipv6Addr,
    pub message: MldMessage,
}

impl MldSocket {
    /// Opens the socket on the interface `iface` (index `ifindex`), bound
    /// to its link-local address `link_local`, not looping back its own
    /// messages.
    pub fn open(iface: &str, ifindex: u32, link_local: Ipv6Addr) -> io::Result<Self> {
        let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
        socket.bind_device(Some(iface.as_bytes()))?;
        socket.set_multicast_if_v6(ifindex)?;
        socket.set_multicast_hops_v6(1)?;
        socket.set_multicast_loop_v6(false)?;
        socket.set_nonblocking(true)?;
        set_option_bytes(&socket, libc::IPPROTO_IPV6, libc::IPV6_HOPOPTS, &HOP_BY_HOP)?;
        socket.bind(&SockAddr::from(SocketAddrV6::new(
            link_local, 0, 0, ifindex,
        )))?;
        Ok(Self { socket, ifindex })
    }

    /// Takes over a socket opened by `open` in a previous instance (handed
    /// over by the service manager, with its memberships).
    pub fn adopt(fd: OwnedFd, ifindex: u32) -> io::Result<Self> {
        let socket = Socket::from(fd);
        socket.set_nonblocking(true)?;
        Ok(Self { socket, ifindex })
    }

    /// Joins `group` on the socket's interface; the kernel leaves it when
    /// the socket closes.
    pub fn join(&self, group: Ipv6Addr) -> io::Result<()> {
        self.socket.join_multicast_v6(&group, self.ifindex)
    }

    /// Leaves `group`: the kernel reports it (an MLDv2 leave, or a Done).
    pub fn leave(&self, group: Ipv6Addr) -> io::Result<()> {
        self.socket.leave_multicast_v6(&group, self.ifindex)
    }

    /// Sends an MLD message to `destination` on the socket's interface.
    pub fn send(&self, message: &[u8], destination: Ipv6Addr) -> io::Result<()> {
        let to = SockAddr::from(SocketAddrV6::new(destination, 0, 0, self.ifindex));
        self.socket.send_to(message, &to)?;
        Ok(())
    }

    /// Receives one queued ICMPv6 message without blocking (`WouldBlock`
    /// when none is queued).
    pub fn try_recv(&self) -> io::Result<Received6> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
        let (len, from) = self.socket.recv_from(&mut buf)?;
        // SAFETY: recv_from initialised the first `len` bytes.
        let message: &[u8] = unsafe { &*(&raw const buf[..len] as *const [u8]) };
        let source = from
            .as_socket_ipv6()
            .map_or(Ipv6Addr::UNSPECIFIED, |a| *a.ip());
        Ok(Received6 {
            source,
            message: parse_mld(message),
        })
    }
}

impl AsRawFd for MldSocket {
    fn as_raw_fd(&self) -> i32 {
        self.socket.as_raw_fd()
    }
}
