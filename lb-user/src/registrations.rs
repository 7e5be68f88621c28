//! The announcements that register a backend, which XDP passes up to the
//! stack (protocol §4.3): the age each carries tells an LB started after
//! its backends how long they have been registered, for the second
//! chance's previous tables (§7). Refreshes never come up: XDP drops them.
use std::{
    io,
    mem::MaybeUninit,
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd,
};

use lb_common::wire::{AGE_EXTENSION_LEN, ANNOUNCE_V1_LEN, registration_age};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::maps::GroupConfig;

/// Receive buffer of each socket: room for a few thousand registrations
/// between two passes (a whole fleet answers a fresh LB's first query
/// within one max response time); what overflows registers without an age.
const RECEIVE_BUFFER: i32 = 4 << 20;

/// Datagrams read per group and pass at most: the pass stays short.
const MAX_PER_PASS: usize = 65_536;

/// One UDP socket per group, bound to the LB's address of the group's
/// family and the group's port, where the registering announcements arrive.
pub struct Registrations {
    /// Group id, the LB address bound, the socket.
    sockets: Vec<(u32, IpAddr, Socket)>,
}

impl Registrations {
    /// Binds port of each group (ids in order) on the address `lb_addr`
    /// gives for the group's family.
    pub fn bind(groups: &[GroupConfig], lb_addr: impl Fn(IpAddr) -> IpAddr) -> io::Result<Self> {
        let sockets = (0u32..)
            .zip(groups)
            .map(|(id, group)| {
                let lb = lb_addr(group.group);
                let socket = Socket::new(
                    Domain::for_address(SocketAddr::new(lb, 0)),
                    Type::DGRAM,
                    Some(Protocol::UDP),
                )?;
                socket.set_reuse_address(true)?;
                socket.set_nonblocking(true)?;
                force_receive_buffer(&socket)?;
                socket
                    .bind(&SockAddr::from(SocketAddr::new(lb, group.port)))
                    .map_err(|e| io::Error::new(e.kind(), format!("[{lb}]:{}: {e}", group.port)))?;
                Ok((id, lb, socket))
            })
            .collect::<io::Result<_>>()?;
        Ok(Self { sockets })
    }

    /// Reads what arrived since the last call and gives `learn` each
    /// backend (group id, address) whose announcement carries an age that
    /// verifies under `keys` (any, without keys), with that age in seconds.
    pub fn drain(
        &self,
        keys: &[[u8; 16]],
        mut learn: impl FnMut(u32, IpAddr, u32),
    ) -> io::Result<()> {
        // The v1 payload and the extension: what follows is not read.
        let mut buf = [MaybeUninit::<u8>::uninit(); ANNOUNCE_V1_LEN + AGE_EXTENSION_LEN];
        for &(group_id, lb, ref socket) in &self.sockets {
            for _ in 0..MAX_PER_PASS {
                let (len, from) = match socket.recv_from(&mut buf) {
                    Ok(received) => received,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                };
                let Some(src) = from.as_socket().map(|a| a.ip()) else {
                    continue;
                };
                // SAFETY: recv_from initialised the first `len` bytes.
                let payload = unsafe { &*(&raw const buf[..len] as *const [u8]) };
                if let Some(seconds) = registration_age(payload, keys, (src, lb)) {
                    learn(group_id, src, seconds);
                }
            }
        }
        Ok(())
    }
}

/// SO_RCVBUFFORCE (root): past `net.core.rmem_max`, which is a few
/// hundred datagrams by default.
fn force_receive_buffer(socket: &Socket) -> io::Result<()> {
    let size = RECEIVE_BUFFER;
    // SAFETY: a valid socket and an int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
