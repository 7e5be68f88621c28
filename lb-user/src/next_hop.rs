//! Next hops toward backends reached by IPIP. XDP reads the kernel's FIB
//! and neighbour table but cannot make the kernel resolve a neighbour, so
//! the control plane does: an ICMP echo to a backend makes the kernel
//! resolve the next hop toward it (as any packet the LB sends it would).
//! That happens when a backend is first reached by IPIP, and whenever XDP
//! drops its packets for want of a next hop; each such drop is logged once
//! per backend and reason, and `status` lists them.
//!
//! The kernel's FIB helper answers only for an interface with IPv4
//! forwarding on (`BPF_FIB_LKUP_RET_FWD_DISABLED` otherwise, whatever the
//! lookup flags), so the LB's interface gets `forwarding=1` from the first
//! backend reached by IPIP on (an LB whose backends are all on its segment
//! never changes it), restored on exit.
use std::{
    collections::{HashMap, HashSet},
    io,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsRawFd,
};

use anyhow::Context;
use lb_common::{BackendEntry, BackendKey, fib_result_name, wire::internet_checksum};
use lb_host::system::SysctlOverride;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tracing::{info, warn};

use crate::{
    forwarding::Reach,
    maps::{LbMaps, MapsError},
};

/// `BPF_FIB_LKUP_RET_NO_NEIGH`: the one FIB result an echo can fix.
const FIB_NO_NEIGHBOUR: u32 = 7;
/// An error with no drop for this long is forgotten (and leaves `status`).
const QUIET_NS: u64 = 10_000_000_000;
const ICMP_ECHO_REQUEST: u8 = 8;
/// `ICMP_FILTER` of <linux/icmp.h> (level `SOL_RAW`): a bitmask of the ICMP
/// types the raw socket does not receive; libc does not export it.
const ICMP_FILTER: libc::c_int = 1;

/// The probe socket and what has been probed and reported.
pub struct NextHops {
    socket: Socket,
    iface: String,
    /// IPv4 forwarding on the interface, once a backend needs IPIP.
    forwarding: Option<SysctlOverride>,
    reach: Reach,
    /// Backends reached by IPIP that have been probed once.
    probed: HashSet<[u8; 4]>,
    /// Errors reported: backend -> FIB result.
    reported: HashMap<[u8; 4], u32>,
    sequence: u16,
}

impl NextHops {
    /// Opens a raw ICMP socket on `iface` that only sends (every ICMP
    /// message that arrives is filtered out, so nothing queues up on it).
    pub fn open(iface: &str, reach: Reach) -> anyhow::Result<Self> {
        let socket = Self::probe_socket(iface)
            .context("opening the raw ICMP socket that resolves next hops toward IPIP backends")?;
        Ok(Self {
            socket,
            iface: iface.to_owned(),
            forwarding: None,
            reach,
            probed: HashSet::new(),
            reported: HashMap::new(),
            sequence: 0,
        })
    }

    fn probe_socket(iface: &str) -> io::Result<Socket> {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
        socket.bind_device(Some(iface.as_bytes()))?;
        socket.set_nonblocking(true)?;
        let filter_all: u32 = u32::MAX;
        // SAFETY: the pointer and length describe `filter_all`.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_RAW,
                ICMP_FILTER,
                (&raw const filter_all).cast(),
                size_of::<u32>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }

    /// Probes each backend newly reached by IPIP (before its first client
    /// packet, ideally: call this before the tables are rebuilt), then
    /// reports and probes what XDP could not send, and forgets errors that
    /// have been quiet for a while.
    pub fn poll(
        &mut self,
        maps: &mut LbMaps,
        backends: &[(BackendKey, BackendEntry)],
        now_ns: u64,
    ) -> Result<(), MapsError> {
        let wrapped: HashSet<[u8; 4]> = backends
            .iter()
            .map(|(k, _)| k.addr)
            .filter(|&a| self.reach.wraps(Ipv4Addr::from(a)))
            .collect();
        if !wrapped.is_empty() && self.forwarding.is_none() {
            self.enable_forwarding();
        }
        let new: Vec<[u8; 4]> = wrapped.difference(&self.probed).copied().collect();
        for addr in new {
            self.probe(addr);
        }
        self.probed = wrapped;
        for (addr, error) in maps.next_hop_errors()? {
            let backend = Ipv4Addr::from(addr);
            if now_ns.saturating_sub(error.last_ns) > QUIET_NS {
                maps.remove_next_hop_error(addr)?;
                if self.reported.remove(&addr).is_some() {
                    info!(%backend, "no packet toward the backend dropped for want of a next hop for 10 s");
                }
                continue;
            }
            if self.reported.insert(addr, error.result) == Some(error.result) {
                continue;
            }
            warn!(
                %backend, drops = error.drops,
                "client packets for the backend dropped: the kernel's FIB gives no next hop toward it ({}){}",
                fib_result_name(error.result),
                if error.result == FIB_NO_NEIGHBOUR { "; asking the kernel to resolve it" } else { "; check the LB's routes" }
            );
            if error.result == FIB_NO_NEIGHBOUR {
                self.probe(addr);
            }
        }
        Ok(())
    }

    /// Leaves forwarding on after exit (a restart that keeps state: XDP
    /// goes on forwarding through the FIB).
    pub fn keep_forwarding(&mut self) {
        if let Some(forwarding) = &mut self.forwarding {
            forwarding.keep();
        }
    }

    /// Turns IPv4 forwarding on for the interface, for the FIB helper.
    fn enable_forwarding(&mut self) {
        let key = format!("net/ipv4/conf/{}/forwarding", self.iface);
        match SysctlOverride::set(&key, "1") {
            Ok(forwarding) => {
                info!(iface = %self.iface, "IPv4 forwarding on for the interface while lb-user runs: a backend is reached by IPIP, and the kernel's FIB answers XDP's next-hop lookups only there");
                self.forwarding = Some(forwarding);
            }
            Err(e) => {
                warn!(iface = %self.iface, "cannot turn IPv4 forwarding on, so XDP's next-hop lookups fail and IPIP backends get no traffic: {e}")
            }
        }
    }

    /// One ICMP echo to `addr`: the kernel resolves the next hop to send it.
    fn probe(&mut self, addr: [u8; 4]) {
        self.sequence = self.sequence.wrapping_add(1);
        let [seq_hi, seq_lo] = self.sequence.to_be_bytes();
        let mut echo = [ICMP_ECHO_REQUEST, 0, 0, 0, b'l', b'b', seq_hi, seq_lo];
        let sum = internet_checksum(&echo).to_be_bytes();
        echo[2..4].copy_from_slice(&sum);
        let to = SockAddr::from(SocketAddrV4::new(Ipv4Addr::from(addr), 0));
        if let Err(e) = self.socket.send_to(&echo, &to) {
            warn!(backend = %Ipv4Addr::from(addr), "probing the next hop toward the backend failed: {e}");
        }
    }
}
