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
//! never changes it), restored on exit. Its original value is recorded
//! under /run (`IFACE VALUE`), so that an instance that adopts the pins
//! after a restart or a kill restores the original, not its predecessor's
//! "1", and so does `lb-user stop` after a kill.
use std::{
    fs, io,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use anyhow::Context;
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use lb_common::{BackendEntry, BackendKey, fib_result_name, wire::internet_checksum};
use lb_host::system::SysctlOverride;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tracing::{info, warn};

use crate::{
    instance,
    maps::{LbMaps, MapsError},
    reach::Reach,
};

/// `BPF_FIB_LKUP_RET_NO_NEIGH`: the one FIB result an echo can fix.
const FIB_NO_NEIGHBOUR: u32 = 7;
/// An error with no drop for this long is forgotten (and leaves `status`).
const QUIET_NS: u64 = 10_000_000_000;
const ICMP_ECHO_REQUEST: u8 = 8;
/// `ICMP_FILTER` of <linux/icmp.h> (level `SOL_RAW`): a bitmask of the ICMP
/// types the raw socket does not receive; libc does not export it.
const ICMP_FILTER: libc::c_int = 1;

/// IPv4 forwarding turned on for the LB's interface (restored on drop
/// unless kept), and the record of its original value (removed with it).
struct Forwarding {
    sysctl: SysctlOverride,
    record: PathBuf,
    keep_record: bool,
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        if !self.keep_record {
            let _ = fs::remove_file(&self.record);
        }
    }
}

fn forwarding_key(iface: &str) -> String {
    format!("net/ipv4/conf/{iface}/forwarding")
}

fn forwarding_record(pin_dir: &Path) -> PathBuf {
    instance::run_file(pin_dir, "forwarding")
}

/// The interface and original value recorded at `path`, if any.
fn read_record(path: &Path) -> Option<(String, String)> {
    let text = fs::read_to_string(path).ok()?;
    let (iface, value) = text.trim().split_once(' ')?;
    Some((iface.to_owned(), value.to_owned()))
}

/// For `lb-user stop` after a kill: puts back the forwarding value that
/// the instance at `pin_dir` recorded, if it turned forwarding on; returns
/// the interface and value restored.
pub fn restore_recorded_forwarding(pin_dir: &Path) -> Option<(String, String)> {
    let record = forwarding_record(pin_dir);
    let (iface, value) = read_record(&record)?;
    let written = fs::write(format!("/proc/sys/{}", forwarding_key(&iface)), &value);
    let _ = fs::remove_file(&record);
    written.ok().map(|()| (iface, value))
}

/// The probe socket and what has been probed and reported.
pub struct NextHops {
    socket: Socket,
    iface: String,
    /// IPv4 forwarding on the interface, once a backend needs IPIP.
    forwarding: Option<Forwarding>,
    /// Where the original forwarding value is recorded.
    record: PathBuf,
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
    /// The original forwarding value is recorded for the instance pinned
    /// at `pin_dir`.
    pub fn open(iface: &str, reach: Reach, pin_dir: &Path) -> anyhow::Result<Self> {
        let socket = Self::probe_socket(iface)
            .context("opening the raw ICMP socket that resolves next hops toward IPIP backends")?;
        let record = forwarding_record(pin_dir);
        // A predecessor whose pins this instance adopts turned forwarding
        // on for its IPIP backends: XDP still needs it.
        let predecessor_forwarded = read_record(&record).is_some_and(|(i, _)| i == iface);
        let mut next_hops = Self {
            socket,
            iface: iface.to_owned(),
            forwarding: None,
            record,
            reach,
            probed: HashSet::new(),
            reported: HashMap::new(),
            sequence: 0,
        };
        if predecessor_forwarded {
            next_hops.enable_forwarding();
        }
        Ok(next_hops)
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
            .filter(|&a| self.reach.wraps(Ipv4Addr::from(a).into()))
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
            forwarding.sysctl.keep();
            forwarding.keep_record = true;
        }
    }

    /// Turns IPv4 forwarding on for the interface, for the FIB helper.
    fn enable_forwarding(&mut self) {
        let original = read_record(&self.record)
            .filter(|(iface, _)| *iface == self.iface)
            .map(|(_, value)| value);
        match SysctlOverride::set_restoring(&forwarding_key(&self.iface), "1", original) {
            Ok(sysctl) => {
                info!(iface = %self.iface, "IPv4 forwarding on for the interface while lb-user runs: a backend is reached by IPIP, and the kernel's FIB answers XDP's next-hop lookups only there");
                let recorded = format!("{} {}\n", self.iface, sysctl.original());
                if let Err(e) = fs::write(&self.record, recorded) {
                    warn!(record = %self.record.display(), "the interface's original forwarding value is not recorded; after a restart a stop leaves forwarding on: {e}");
                }
                self.forwarding = Some(Forwarding {
                    sysctl,
                    record: self.record.clone(),
                    keep_record: false,
                });
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
