//! Facts about the host the LB runs on: privileges, interfaces, bpffs, clock.
use std::{
    ffi::CString,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

/// Why the host cannot run the LB as asked.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error("{what} needs root (raw sockets, BPF, interface settings); run it with sudo")]
    NotRoot { what: &'static str },
    #[error("interface {iface:?} does not exist (see `ip link`)")]
    NoSuchInterface { iface: String },
    #[error("interface {iface:?} has no IPv4 address; add one with `ip addr add`")]
    NoIpv4Address { iface: String },
    #[error(
        "interface {iface:?} has no link-local IPv6 address (fe80::/10); is IPv6 disabled on it?"
    )]
    NoIpv6LinkLocal { iface: String },
    #[error(
        "interface {iface:?} has no global or unique-local IPv6 address, which an IPv6 group or VIP needs (add one: ip -6 addr add 2001:db8::1/64 dev {iface})"
    )]
    NoIpv6Address { iface: String },
    #[error("cannot read the MAC address of {iface:?}: {reason}")]
    NoMac { iface: String, reason: String },
    #[error("`ip {args}` failed: {reason}")]
    Ip { args: String, reason: String },
    #[error("cannot set {path}: {reason}")]
    Sysctl { path: String, reason: String },
    #[error(
        "{path} is not on a bpf filesystem; mount one with `mount -t bpf bpf {mount}` or pass --pin-path DIR on a bpffs"
    )]
    NotBpffs { path: String, mount: String },
}

/// Fails unless the process runs as root.
pub fn require_root(what: &'static str) -> Result<(), SystemError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(SystemError::NotRoot { what });
    }
    Ok(())
}

/// Index of `iface`.
pub fn interface_index(iface: &str) -> Result<u32, SystemError> {
    let not_found = || SystemError::NoSuchInterface {
        iface: iface.to_owned(),
    };
    let name = CString::new(iface).map_err(|_| not_found())?;
    // SAFETY: `name` is a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(not_found()),
        index => Ok(index),
    }
}

/// Name of the kernel driver behind `iface` (`veth`, `virtio_net`, ...),
/// as `ethtool -i` shows it; `None` if the driver does not say.
pub fn interface_driver(iface: &str) -> Result<Option<String>, SystemError> {
    /// `struct ethtool_drvinfo` of linux/ethtool.h.
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 160],
    }
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    interface_index(iface)?;
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 160],
    };
    // SAFETY: an all-zero ifreq is valid; the name is copied in below.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request
        .ifr_name
        .iter_mut()
        .zip(iface.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    request.ifr_ifru.ifru_data = (&raw mut info).cast();
    // SAFETY: socket has no memory preconditions; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Ok(None);
    }
    // SAFETY: SIOCETHTOOL reads the request and writes at most
    // size_of::<DrvInfo>() bytes into `info`, which outlives the call.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &raw mut request) };
    // SAFETY: fd is ours and not used after this.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return Ok(None);
    }
    let len = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Ok(Some(
        String::from_utf8_lossy(&info.driver[..len]).into_owned(),
    ))
}

/// First IPv4 address of `iface`.
pub fn interface_ipv4(iface: &str) -> Result<Ipv4Addr, SystemError> {
    interface_ipv4_net(iface).map(|(addr, _)| addr)
}

/// First IPv4 address of `iface` and its prefix length.
pub fn interface_ipv4_net(iface: &str) -> Result<(Ipv4Addr, u8), SystemError> {
    interface_index(iface)?;
    let no_address = || SystemError::NoIpv4Address {
        iface: iface.to_owned(),
    };
    interface_addrs(iface)
        .ok_or_else(no_address)?
        .into_iter()
        .find_map(|(addr, prefix_len)| match addr {
            IpAddr::V4(addr) => Some((addr, prefix_len)),
            IpAddr::V6(_) => None,
        })
        .ok_or_else(no_address)
}

/// The link-local IPv6 address of `iface` (fe80::/10), which MLD messages
/// leave from (protocol §9).
pub fn interface_ipv6_link_local(iface: &str) -> Result<Ipv6Addr, SystemError> {
    interface_index(iface)?;
    interface_addrs(iface)
        .unwrap_or_default()
        .into_iter()
        .find_map(|(addr, _)| match addr {
            IpAddr::V6(addr) if addr.segments()[0] & 0xffc0 == 0xfe80 => Some(addr),
            _ => None,
        })
        .ok_or_else(|| SystemError::NoIpv6LinkLocal {
            iface: iface.to_owned(),
        })
}

/// The first global or unique-local IPv6 address of `iface` (protocol §9:
/// the LB's address of IPv6 groups, the address an agent announces) and
/// its prefix length; one of a subnet before a /128 (a VIP lb-user holds
/// there, which the kernel lists first, being newer), if there is one.
pub fn interface_ipv6_net(iface: &str) -> Result<(Ipv6Addr, u8), SystemError> {
    interface_index(iface)?;
    let global: Vec<(Ipv6Addr, u8)> = interface_addrs(iface)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(addr, prefix_len)| match addr {
            IpAddr::V6(addr) if lb_common::is_global_unicast6(&addr.octets()) => {
                Some((addr, prefix_len))
            }
            _ => None,
        })
        .collect();
    global
        .iter()
        .find(|(_, prefix_len)| *prefix_len < 128)
        .or(global.first())
        .copied()
        .ok_or_else(|| SystemError::NoIpv6Address {
            iface: iface.to_owned(),
        })
}

/// The address of `iface` of `family`'s kind: its first IPv4 address, or
/// its first global IPv6 one.
pub fn interface_addr_like(iface: &str, family: IpAddr) -> Result<IpAddr, SystemError> {
    match family {
        IpAddr::V4(_) => interface_ipv4(iface).map(IpAddr::V4),
        IpAddr::V6(_) => interface_ipv6_net(iface).map(|(addr, _)| IpAddr::V6(addr)),
    }
}

/// Every address of `iface` with its prefix length, in the kernel's
/// order; `None` if they cannot be read.
fn interface_addrs(iface: &str) -> Option<Vec<(IpAddr, u8)>> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return None;
    }
    let mut found = Vec::new();
    let mut cursor = addrs;
    while !cursor.is_null() {
        // SAFETY: cursor walks the list returned by getifaddrs.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) };
        if name.to_bytes() != iface.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and has at least a family field.
        let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
        let netmask = (!entry.ifa_netmask.is_null()).then_some(entry.ifa_netmask);
        if family == libc::AF_INET {
            // SAFETY: family AF_INET means the address is a sockaddr_in.
            let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
            // SAFETY: an AF_INET address has an AF_INET netmask.
            let prefix_len = netmask.map_or(32, |m| unsafe {
                u32::from_be((*(m as *const libc::sockaddr_in)).sin_addr.s_addr).count_ones() as u8
            });
            found.push((
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into(),
                prefix_len,
            ));
        } else if family == libc::AF_INET6 {
            // SAFETY: family AF_INET6 means the address is a sockaddr_in6.
            let sin6 = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in6) };
            // SAFETY: an AF_INET6 address has an AF_INET6 netmask.
            let prefix_len = netmask.map_or(128, |m| unsafe {
                let mask = (*(m as *const libc::sockaddr_in6)).sin6_addr.s6_addr;
                mask.iter().map(|b| b.count_ones()).sum::<u32>() as u8
            });
            found.push((Ipv6Addr::from(sin6.sin6_addr.s6_addr).into(), prefix_len));
        }
    }
    // SAFETY: addrs came from getifaddrs.
    unsafe { libc::freeifaddrs(addrs) };
    Some(found)
}

/// Fails unless `dir` (or its nearest existing ancestor) is on a bpffs.
pub fn require_bpffs(dir: &Path) -> Result<(), SystemError> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let not_bpffs = || SystemError::NotBpffs {
        path: dir.display().to_string(),
        mount: existing.display().to_string(),
    };
    let c_path = CString::new(existing.as_os_str().as_encoded_bytes()).map_err(|_| not_bpffs())?;
    // SAFETY: statfs fills the zeroed struct for a valid path.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is NUL-terminated and stat is writable.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0
        || stat.f_type as i64 != BPF_FS_MAGIC
    {
        return Err(not_bpffs());
    }
    Ok(())
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME in ns since the Unix epoch: the clock of sequences.
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into ts.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// MAC address of `iface`.
pub fn interface_mac(iface: &str) -> Result<[u8; 6], SystemError> {
    let err = |reason: String| SystemError::NoMac {
        iface: iface.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
        .map_err(|e| err(e.to_string()))?;
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    bytes
        .try_into()
        .map_err(|_| err(format!("{:?} is not an Ethernet address", text.trim())))
}

fn ip(args: &[&str]) -> Result<(), SystemError> {
    let fail = |reason: String| SystemError::Ip {
        args: args.join(" "),
        reason,
    };
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(())
}

/// An address added to an interface for the life of the process; removed on
/// drop unless it was there before.
pub struct AddedAddress {
    addr: IpAddr,
    iface: String,
    owned: bool,
}

impl AddedAddress {
    /// Adds `addr` (a host route: /32 or /128) to `iface` (nothing to do if
    /// it is there already); an IPv6 one without duplicate address
    /// detection, which would hold it back for a second. With `take_over`,
    /// an address already there (left by a killed predecessor) is removed
    /// on drop too.
    pub fn add(addr: IpAddr, iface: &str, take_over: bool) -> Result<Self, SystemError> {
        let present = interface_has_address(iface, addr);
        if !present {
            let cidr = host_cidr(addr);
            let mut args = vec!["addr", "add", &cidr, "dev", iface];
            if addr.is_ipv6() {
                args.push("nodad");
            }
            ip(&args)?;
        }
        Ok(Self {
            addr,
            iface: iface.to_owned(),
            owned: !present || take_over,
        })
    }
}

impl AddedAddress {
    /// Whether the address goes when this is dropped.
    pub fn owned(&self) -> bool {
        self.owned
    }

    /// Leaves the address in place when this is dropped (a restart that
    /// keeps state: the next instance takes it over).
    pub fn keep(&mut self) {
        self.owned = false;
    }
}

impl Drop for AddedAddress {
    fn drop(&mut self) {
        if self.owned {
            let _ = ip(&["addr", "del", &host_cidr(self.addr), "dev", &self.iface]);
        }
    }
}

/// `addr` as a host prefix: /32 or /128.
fn host_cidr(addr: IpAddr) -> String {
    let len = if addr.is_ipv4() { 32 } else { 128 };
    format!("{addr}/{len}")
}

fn interface_has_address(iface: &str, addr: IpAddr) -> bool {
    let family = if addr.is_ipv4() { "-4" } else { "-6" };
    std::process::Command::new("ip")
        .args([family, "-o", "addr", "show", "dev", iface])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {addr}/")))
}

/// A sysctl set for the life of the process and restored on drop.
pub struct SysctlOverride {
    path: String,
    previous: String,
    /// Restored on drop, unless kept.
    restore: bool,
}

impl SysctlOverride {
    /// Sets `/proc/sys/<key>` (written with slashes: `net/ipv4/conf/eth0/arp_ignore`).
    pub fn set(key: &str, value: &str) -> Result<Self, SystemError> {
        Self::set_restoring(key, value, None)
    }

    /// As `set`, restoring `original` on drop instead of the value found
    /// (which a predecessor that kept its setting for this process wrote).
    pub fn set_restoring(
        key: &str,
        value: &str,
        original: Option<String>,
    ) -> Result<Self, SystemError> {
        let path = format!("/proc/sys/{key}");
        let fail = |e: std::io::Error| SystemError::Sysctl {
            path: path.clone(),
            reason: e.to_string(),
        };
        let previous = std::fs::read_to_string(&path)
            .map_err(fail)?
            .trim()
            .to_owned();
        std::fs::write(&path, value).map_err(fail)?;
        Ok(Self {
            path,
            previous: original.unwrap_or(previous),
            restore: true,
        })
    }

    /// The value restored on drop.
    pub fn original(&self) -> &str {
        &self.previous
    }

    /// Leaves the setting in place when this is dropped (a restart that
    /// keeps state: the next instance needs it too).
    pub fn keep(&mut self) {
        self.restore = false;
    }
}

impl Drop for SysctlOverride {
    fn drop(&mut self) {
        if !self.restore {
            return;
        }
        let _ = std::fs::write(&self.path, &self.previous);
    }
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold
/// spaces and ends with the last ')'); `pid` may be `self`.
pub fn proc_stat(pid: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

/// Clock ticks per second of the times in `/proc`.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// CPU time (user + system) process `pid` (or `self`) has used.
pub fn cpu_time(pid: &str) -> Option<std::time::Duration> {
    let fields = proc_stat(pid)?;
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(std::time::Duration::from_secs_f64(ticks / clock_ticks()))
}
