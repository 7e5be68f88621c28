//! Next hops toward backends reached by IP-in-IP. XDP reads the kernel's
//! FIB and neighbour table but cannot make the kernel resolve a neighbour,
//! so the control plane does: an ICMP (or ICMPv6) echo to a backend makes
//! the kernel resolve the next hop toward it (as any packet the LB sends
//! it would). That happens when a backend is first reached by IP-in-IP,
//! and whenever XDP drops its packets for want of a next hop; each such
//! drop is logged once per backend and reason, and `status` lists them.
//!
//! The kernel's FIB helper answers only for an interface with forwarding
//! of the lookup's family on (`BPF_FIB_LKUP_RET_FWD_DISABLED` otherwise,
//! whatever the lookup flags), so the LB's interface gets
//! `net.ipv4.conf.IFACE.forwarding=1` from the first IPv4 backend reached
//! by IP-in-IP on, and `net.ipv6.conf.IFACE.forwarding=1` from the first
//! IPv6 one (an LB whose backends are all on its segment never changes
//! them), restored on exit. Each original value is recorded under /run
//! (`IFACE VALUE`), so that an instance that adopts the pins after a
//! restart or a kill restores the original, not its predecessor's "1", and
//! so does `lb-user stop` after a kill.
use std::{
    fs, io,
    net::SocketAddr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use anyhow::Context;
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use lb_common::{BackendEntry, BackendKey, BackendKey6, fib_result_name, wire::internet_checksum};
use lb_host::system::SysctlOverride;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tracing::{info, warn};

use crate::{
    address::Address,
    instance,
    maps::{HopAddr, LbMaps, MapsError},
    reach::Reach,
};

/// `BPF_FIB_LKUP_RET_NO_NEIGH`: the one FIB result an echo can fix.
const FIB_NO_NEIGHBOUR: u32 = 7;
/// An error with no drop for this long is forgotten (and leaves `status`).
const QUIET_NS: u64 = 10_000_000_000;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
/// `ICMP_FILTER` of <linux/icmp.h> (level `SOL_RAW`) and `ICMP6_FILTER` of
/// <netinet/icmp6.h> (level `IPPROTO_ICMPV6`), both 1: a bitmask of the
/// types the raw socket does not receive; libc exports neither.
const ICMP_FILTER: libc::c_int = 1;

/// Forwarding of one family turned on for the LB's interface (restored on drop
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

/// A family's part of the next-hop work: the sysctl the FIB helper
/// needs, the probe that makes the kernel resolve a neighbour, and the
/// record of the sysctl's original value.
trait Family: HopAddr {
    /// `ipv4` or `ipv6`, as the sysctl tree names it.
    const SYSCTL: &'static str;
    /// The file under /run that records the original forwarding value.
    const RECORD: &'static str;
    /// A raw socket of the family's ICMP on `iface` that only sends.
    fn probe_socket(iface: &str) -> io::Result<Socket>;
    /// An echo request with `sequence`.
    fn echo(sequence: u16) -> Vec<u8>;
}

impl Family for [u8; 4] {
    const SYSCTL: &'static str = "ipv4";
    const RECORD: &'static str = "forwarding";
    fn probe_socket(iface: &str) -> io::Result<Socket> {
        // Every ICMP type filtered out (a bitmask of the types not received).
        sending_socket(
            iface,
            Domain::IPV4,
            Protocol::ICMPV4,
            libc::SOL_RAW,
            &[u32::MAX],
        )
    }
    fn echo(sequence: u16) -> Vec<u8> {
        let [seq_hi, seq_lo] = sequence.to_be_bytes();
        let mut echo = vec![ICMP_ECHO_REQUEST, 0, 0, 0, b'l', b'b', seq_hi, seq_lo];
        let sum = internet_checksum(&echo).to_be_bytes();
        echo[2..4].copy_from_slice(&sum);
        echo
    }
}

impl Family for [u8; 16] {
    const SYSCTL: &'static str = "ipv6";
    const RECORD: &'static str = "forwarding6";
    fn probe_socket(iface: &str) -> io::Result<Socket> {
        // `struct icmp6_filter`: a bit per type, set to block it: all.
        sending_socket(
            iface,
            Domain::IPV6,
            Protocol::ICMPV6,
            libc::IPPROTO_ICMPV6,
            &[u32::MAX; 8],
        )
    }
    fn echo(sequence: u16) -> Vec<u8> {
        let [seq_hi, seq_lo] = sequence.to_be_bytes();
        // The kernel fills in an ICMPv6 checksum on a raw ICMPv6 socket.
        vec![ICMPV6_ECHO_REQUEST, 0, 0, 0, b'l', b'b', seq_hi, seq_lo]
    }
}

/// A raw `domain` socket of `protocol` on `iface` that receives nothing
/// (`filter`, a bitmask of blocked ICMP types, set at `level`), so that
/// nothing queues up on it.
fn sending_socket(
    iface: &str,
    domain: Domain,
    protocol: Protocol,
    level: libc::c_int,
    filter: &[u32],
) -> io::Result<Socket> {
    let socket = Socket::new(domain, Type::RAW, Some(protocol))?;
    socket.bind_device(Some(iface.as_bytes()))?;
    socket.set_nonblocking(true)?;
    // SAFETY: the pointer and length describe `filter`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            ICMP_FILTER,
            filter.as_ptr().cast(),
            size_of_val(filter) as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

fn forwarding_key<A: Family>(iface: &str) -> String {
    format!("net/{}/conf/{iface}/forwarding", A::SYSCTL)
}

fn forwarding_record<A: Family>(pin_dir: &Path) -> PathBuf {
    instance::run_file(pin_dir, A::RECORD)
}

/// The interface and original value recorded at `path`, if any.
fn read_record(path: &Path) -> Option<(String, String)> {
    let text = fs::read_to_string(path).ok()?;
    let (iface, value) = text.trim().split_once(' ')?;
    Some((iface.to_owned(), value.to_owned()))
}

/// For `lb-user stop` after a kill: puts back the forwarding values that
/// the instance at `pin_dir` recorded, if it turned forwarding on; returns
/// the sysctls and values restored.
pub fn restore_recorded_forwarding(pin_dir: &Path) -> Vec<(String, String)> {
    [
        restore_recorded::<[u8; 4]>(pin_dir),
        restore_recorded::<[u8; 16]>(pin_dir),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn restore_recorded<A: Family>(pin_dir: &Path) -> Option<(String, String)> {
    let record = forwarding_record::<A>(pin_dir);
    let (iface, value) = read_record(&record)?;
    let key = forwarding_key::<A>(&iface);
    let written = fs::write(format!("/proc/sys/{key}"), &value);
    let _ = fs::remove_file(&record);
    written.ok().map(|()| (key.replace('/', "."), value))
}

/// Both families' server lists.
pub type ServerLists<'a> = (
    &'a [(BackendKey, BackendEntry)],
    &'a [(BackendKey6, BackendEntry)],
);

/// The next-hop work of both families.
pub struct NextHops {
    v4: FamilyHops<[u8; 4]>,
    v6: FamilyHops<[u8; 16]>,
}

/// One family's probe socket (none if the kernel has no such family)
/// and what has been probed and reported.
struct FamilyHops<A: Family> {
    socket: Option<Socket>,
    iface: String,
    /// Forwarding on the interface, once a backend needs IP-in-IP.
    forwarding: Option<Forwarding>,
    /// Where the original forwarding value is recorded.
    record: PathBuf,
    reach: Reach,
    /// Backends reached by IP-in-IP that have been probed once.
    probed: HashSet<A>,
    /// Errors reported: backend -> FIB result.
    reported: HashMap<A, u32>,
    sequence: u16,
}

impl NextHops {
    /// Opens the raw ICMP and ICMPv6 sockets on `iface` that only send.
    /// The original forwarding values are recorded for the instance pinned
    /// at `pin_dir`.
    pub fn open(iface: &str, reach: Reach, pin_dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            v4: FamilyHops::open(iface, reach, pin_dir).context(
                "opening the raw ICMP socket that resolves next hops toward IP-in-IP backends",
            )?,
            v6: FamilyHops::open(iface, reach, pin_dir).unwrap_or_else(|e| {
                warn!(
                    "no raw ICMPv6 socket ({e:#}): next hops toward IPv6 backends are not probed"
                );
                FamilyHops::without_socket(iface, reach, pin_dir)
            }),
        })
    }

    /// Probes each backend newly reached by IP-in-IP (before its first
    /// client packet, ideally: call this before the tables are rebuilt),
    /// then reports and probes what XDP could not send, and forgets errors
    /// that have been quiet for a while.
    pub fn poll(
        &mut self,
        maps: &mut LbMaps,
        (backends, backends6): ServerLists<'_>,
        now_ns: u64,
    ) -> Result<(), MapsError> {
        self.v4
            .poll(maps, backends.iter().map(|(k, _)| k.addr), now_ns)?;
        self.v6
            .poll(maps, backends6.iter().map(|(k, _)| k.addr), now_ns)
    }

    /// Leaves forwarding on after exit (a restart that keeps state: XDP
    /// goes on forwarding through the FIB).
    pub fn keep_forwarding(&mut self) {
        self.v4.keep_forwarding();
        self.v6.keep_forwarding();
    }
}

impl<A: Family> FamilyHops<A> {
    fn open(iface: &str, reach: Reach, pin_dir: &Path) -> anyhow::Result<Self> {
        let socket = A::probe_socket(iface)?;
        let mut hops = Self::without_socket(iface, reach, pin_dir);
        hops.socket = Some(socket);
        // A predecessor whose pins this instance adopts turned forwarding
        // on for its IP-in-IP backends: XDP still needs it.
        if read_record(&hops.record).is_some_and(|(i, _)| i == iface) {
            hops.enable_forwarding();
        }
        Ok(hops)
    }

    fn without_socket(iface: &str, reach: Reach, pin_dir: &Path) -> Self {
        Self {
            socket: None,
            iface: iface.to_owned(),
            forwarding: None,
            record: forwarding_record::<A>(pin_dir),
            reach,
            probed: HashSet::new(),
            reported: HashMap::new(),
            sequence: 0,
        }
    }

    fn poll(
        &mut self,
        maps: &mut LbMaps,
        backends: impl Iterator<Item = A>,
        now_ns: u64,
    ) -> Result<(), MapsError> {
        let wrapped: HashSet<A> = backends
            .filter(|&a| self.reach.wraps(A::Addr::from(a).ip()))
            .collect();
        if !wrapped.is_empty() && self.forwarding.is_none() {
            self.enable_forwarding();
        }
        let new: Vec<A> = wrapped.difference(&self.probed).copied().collect();
        for addr in new {
            self.probe(addr);
        }
        self.probed = wrapped;
        for (addr, error) in maps.next_hop_errors::<A>()? {
            let backend = A::Addr::from(addr);
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

    fn keep_forwarding(&mut self) {
        if let Some(forwarding) = &mut self.forwarding {
            forwarding.sysctl.keep();
            forwarding.keep_record = true;
        }
    }

    /// Turns the family's forwarding on for the interface, for the FIB
    /// helper.
    fn enable_forwarding(&mut self) {
        let original = read_record(&self.record)
            .filter(|(iface, _)| *iface == self.iface)
            .map(|(_, value)| value);
        let key = forwarding_key::<A>(&self.iface);
        match SysctlOverride::set_restoring(&key, "1", original) {
            Ok(sysctl) => {
                info!(
                    iface = %self.iface,
                    "{} on while lb-user runs: a backend is reached by IP-in-IP, and the kernel's FIB answers XDP's next-hop lookups only there{}",
                    key.replace('/', "."),
                    if A::SYSCTL == "ipv6" { " (the interface then ignores Router Advertisements unless accept_ra is 2)" } else { "" }
                );
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
                warn!(iface = %self.iface, "cannot set {key} to 1, so XDP's next-hop lookups fail and IP-in-IP backends of the family get no traffic: {e}")
            }
        }
    }

    /// One echo to `addr`: the kernel resolves the next hop to send it.
    fn probe(&mut self, addr: A) {
        let Some(socket) = &self.socket else {
            return;
        };
        self.sequence = self.sequence.wrapping_add(1);
        let to = SockAddr::from(SocketAddr::new(A::Addr::from(addr).ip(), 0));
        if let Err(e) = socket.send_to(&A::echo(self.sequence), &to) {
            warn!(backend = %A::Addr::from(addr), "probing the next hop toward the backend failed: {e}");
        }
    }
}
