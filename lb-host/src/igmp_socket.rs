//! The raw IGMP socket that the LB sends its queries from and that agents
//! receive queries and send reports on (protocol §4.1, §4.2). The kernel ignores
//! the LB's query, so both ends speak IGMP from user space.
use std::{
    io,
    mem::MaybeUninit,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};

use lb_common::wire::{IP_ROUTER_ALERT, IPPROTO_IGMP, IgmpMessage, parse_igmp};

/// A raw IGMP socket bound to one interface.
pub struct IgmpSocket {
    socket: Socket,
    ifindex: u32,
    ttl: u32,
}

impl AsFd for IgmpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// An IGMP message received on the socket, with its IP source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub source: Ipv4Addr,
    pub destination: Ipv4Addr,
    pub message: IgmpMessage,
}

impl IgmpSocket {
    /// Opens the socket on the interface with index `ifindex` (named
    /// `iface`), sending with `ttl` and the Router Alert option, without
    /// looping back its own messages. The interface is named by index, not
    /// address, so that an address change does not break the socket.
    pub fn open(iface: &str, ifindex: u32, ttl: u32) -> io::Result<Self> {
        let socket = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_IGMP))),
        )?;
        socket.bind_device(Some(iface.as_bytes()))?;
        set_multicast_ifindex(&socket, ifindex)?;
        socket.set_multicast_ttl_v4(ttl)?;
        socket.set_multicast_loop_v4(false)?;
        socket.set_nonblocking(true)?;
        set_option_bytes(
            &socket,
            libc::IPPROTO_IP,
            libc::IP_OPTIONS,
            &IP_ROUTER_ALERT,
        )?;
        Ok(Self {
            socket,
            ifindex,
            ttl,
        })
    }

    /// Takes over a socket opened by `open` in a previous instance (handed
    /// over by the service manager, with its memberships), sending with `ttl`.
    pub fn adopt(fd: OwnedFd, ifindex: u32, ttl: u32) -> io::Result<Self> {
        let socket = Socket::from(fd);
        socket.set_multicast_ttl_v4(ttl)?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            ifindex,
            ttl,
        })
    }

    /// Joins `group` on the socket's interface; the kernel leaves it when
    /// the socket closes.
    pub fn join(&self, group: Ipv4Addr) -> io::Result<()> {
        self.socket
            .join_multicast_v4_n(&group, &InterfaceIndexOrAddress::Index(self.ifindex))
    }

    /// Leaves `group` (the kernel then sends its leave report).
    pub fn leave(&self, group: Ipv4Addr) -> io::Result<()> {
        self.socket
            .leave_multicast_v4_n(&group, &InterfaceIndexOrAddress::Index(self.ifindex))
    }

    /// Sends an IGMP message to `destination`.
    pub fn send(&self, message: &[u8], destination: Ipv4Addr) -> io::Result<()> {
        let to = SockAddr::from(SocketAddrV4::new(destination, 0));
        self.socket.send_to(message, &to)?;
        Ok(())
    }

    /// Sends a link-local message (TTL 1), whatever TTL the socket has.
    pub fn send_link_local(&self, message: &[u8], destination: Ipv4Addr) -> io::Result<()> {
        if self.ttl == 1 {
            return self.send(message, destination);
        }
        self.socket.set_multicast_ttl_v4(1)?;
        let sent = self.send(message, destination);
        self.socket.set_multicast_ttl_v4(self.ttl)?;
        sent
    }

    /// Receives one queued packet without blocking (`WouldBlock` when none
    /// is queued); `None` if it is not a parseable IPv4 IGMP packet.
    pub fn try_recv(&self) -> io::Result<Option<Received>> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
        let len = self.socket.recv(&mut buf)?;
        // SAFETY: recv initialised the first `len` bytes.
        let packet: &[u8] = unsafe { &*(&buf[..len] as *const [MaybeUninit<u8>] as *const [u8]) };
        Ok(parse_ip_igmp(packet))
    }
}

/// Parses an IPv4 packet carrying IGMP as delivered on a raw socket.
pub fn parse_ip_igmp(packet: &[u8]) -> Option<Received> {
    let header_len = usize::from(*packet.first()? & 0x0f) * 4;
    if packet[0] >> 4 != 4
        || header_len < 20
        || packet.len() < header_len
        || packet[9] != IPPROTO_IGMP
    {
        return None;
    }
    let addr =
        |at: usize| Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]);
    Some(Received {
        source: addr(12),
        destination: addr(16),
        message: parse_igmp(&packet[header_len..]),
    })
}

/// Sends the socket's multicast out of the interface with index `ifindex`.
pub fn set_multicast_ifindex(socket: &impl AsRawFd, ifindex: u32) -> io::Result<()> {
    let mreqn = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: ifindex as libc::c_int,
    };
    // SAFETY: the pointer and length describe `mreqn`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            (&raw const mreqn).cast(),
            std::mem::size_of::<libc::ip_mreqn>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets socket option `option` of `level` to the bytes `value` (IP
/// options here, the IPv6 Hop-by-Hop header in `mld_socket`).
pub(crate) fn set_option_bytes(
    socket: &Socket,
    level: libc::c_int,
    option: libc::c_int,
    value: &[u8],
) -> io::Result<()> {
    // SAFETY: the pointer and length describe `value`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl AsRawFd for IgmpSocket {
    fn as_raw_fd(&self) -> i32 {
        self.socket.as_raw_fd()
    }
}
