//! The UDP socket of the routed query and report (protocol §4.4, §9):
//! multicast routers replicate UDP to the group, never IGMP or MLD, so
//! where backends sit behind routers the LB queries and agents report
//! this way too, over IPv4 or IPv6 as the group's family says.
use std::{
    io,
    mem::MaybeUninit,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};

use crate::igmp_socket::set_multicast_ifindex;

/// A UDP socket that sends to group:port out of one interface.
pub struct RoutedSocket {
    socket: Socket,
}

impl AsFd for RoutedSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// A routed message received, with its IP source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutedReceived {
    pub source: IpAddr,
    pub payload: Vec<u8>,
}

impl RoutedSocket {
    /// The LB's sender: from `local` (the tag covers the source address),
    /// out of interface `ifindex`, with `ttl` (hop limit), not looped back.
    pub fn sender(local: IpAddr, ifindex: u32, ttl: u32) -> io::Result<Self> {
        let socket = Self::open(local, ifindex, ttl)?;
        socket.bind(&SockAddr::from(SocketAddr::new(local, 0)))?;
        Ok(Self { socket })
    }

    /// A member's socket: receives what is sent to `group`:`port` and
    /// joins `group` on interface `ifindex`; its reports leave from the
    /// interface's address with `ttl`. Several members on one host may
    /// bind the same group and port.
    pub fn member(group: IpAddr, port: u16, ifindex: u32, ttl: u32) -> io::Result<Self> {
        let socket = Self::open(group, ifindex, ttl)?;
        socket.set_reuse_address(true)?;
        // Bound to the group: only datagrams to it arrive, not unicast to the port.
        socket.bind(&SockAddr::from(SocketAddr::new(group, port)))?;
        match group {
            IpAddr::V4(group) => {
                socket.join_multicast_v4_n(&group, &InterfaceIndexOrAddress::Index(ifindex))?
            }
            IpAddr::V6(group) => socket.join_multicast_v6(&group, ifindex)?,
        }
        Ok(Self { socket })
    }

    /// Takes over a member's socket from a previous instance (handed over
    /// by the service manager, still bound and joined), sending with `ttl`.
    pub fn adopt(fd: OwnedFd, ttl: u32) -> io::Result<Self> {
        let socket = Socket::from(fd);
        match socket.local_addr()?.as_socket() {
            Some(SocketAddr::V6(_)) => socket.set_multicast_hops_v6(ttl)?,
            _ => socket.set_multicast_ttl_v4(ttl)?,
        }
        socket.set_nonblocking(true)?;
        Ok(Self { socket })
    }

    /// A UDP socket of `family`'s family sending multicast out of
    /// `ifindex` with `ttl`, not looped back.
    fn open(family: IpAddr, ifindex: u32, ttl: u32) -> io::Result<Socket> {
        let socket = Socket::new(
            Domain::for_address(SocketAddr::new(family, 0)),
            Type::DGRAM,
            Some(Protocol::UDP),
        )?;
        if family.is_ipv4() {
            set_multicast_ifindex(&socket, ifindex)?;
            socket.set_multicast_ttl_v4(ttl)?;
            socket.set_multicast_loop_v4(false)?;
        } else {
            socket.set_multicast_if_v6(ifindex)?;
            socket.set_multicast_hops_v6(ttl)?;
            socket.set_multicast_loop_v6(false)?;
        }
        socket.set_nonblocking(true)?;
        Ok(socket)
    }

    /// Sends `payload` to `group`:`port`.
    pub fn send(&self, payload: &[u8], group: IpAddr, port: u16) -> io::Result<()> {
        self.socket
            .send_to(payload, &SockAddr::from(SocketAddr::new(group, port)))?;
        Ok(())
    }

    /// Receives one queued datagram without blocking (`WouldBlock` when none).
    pub fn try_recv(&self) -> io::Result<RoutedReceived> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 512];
        let (len, from) = self.socket.recv_from(&mut buf)?;
        // SAFETY: recv_from initialised the first `len` bytes.
        let payload: &[u8] = unsafe { &*(&buf[..len] as *const [MaybeUninit<u8>] as *const [u8]) };
        let source = from
            .as_socket()
            .map_or(Ipv4Addr::UNSPECIFIED.into(), |a| a.ip());
        Ok(RoutedReceived {
            source,
            payload: payload.to_vec(),
        })
    }
}

impl AsRawFd for RoutedSocket {
    fn as_raw_fd(&self) -> i32 {
        self.socket.as_raw_fd()
    }
}
