//! Where a backend is, seen from the LB: on its segment (layer 2) or
//! beyond it (IPIP), as XDP decides it with the same forwarding mode.
use std::{fmt, net::IpAddr};

use foldhash::HashSet;
use lb_common::{BackendEntry, ForwardingMode};
use tracing::{info, warn};

use crate::maps::FamilyKey;

/// One of the LB's segments: backends on it are reached at layer 2.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// How backends are reached: the forwarding mode and the LB's segments
/// (IPv4, and IPv6 where the LB has an IPv6 address).
#[derive(Clone, Copy, Debug)]
pub struct Reach {
    pub mode: ForwardingMode,
    pub segment: Segment,
    pub segment6: Option<Segment>,
}

impl Reach {
    /// Whether traffic can reach `backend` at all (`l2` reaches only the segments).
    pub fn reaches(&self, backend: IpAddr) -> bool {
        self.mode != ForwardingMode::L2 || self.on_segment(backend)
    }

    /// Whether traffic to `backend` is wrapped in IP-in-IP (as XDP decides it).
    pub fn wraps(&self, backend: IpAddr) -> bool {
        match self.mode {
            ForwardingMode::L2 => false,
            ForwardingMode::Ipip => true,
            ForwardingMode::Auto => !self.on_segment(backend),
        }
    }

    /// Whether `backend` is on the LB's segment of its family.
    pub fn on_segment(&self, backend: IpAddr) -> bool {
        self.segment_of(backend)
            .is_some_and(|segment| segment.contains(backend))
    }

    /// The LB's segment of `backend`'s family, if it has one.
    fn segment_of(&self, backend: IpAddr) -> Option<Segment> {
        match backend {
            IpAddr::V4(_) => Some(self.segment),
            IpAddr::V6(_) => self.segment6,
        }
    }
}

impl Segment {
    /// Whether `other` (of either family) is inside this segment.
    pub fn contains(&self, other: IpAddr) -> bool {
        match (self.addr, other) {
            (IpAddr::V4(own), IpAddr::V4(other)) => {
                let mask = netmask(self.prefix_len);
                u32::from(own) & mask == u32::from(other) & mask
            }
            (IpAddr::V6(own), IpAddr::V6(other)) => {
                let mask = netmask6(self.prefix_len);
                u128::from(own) & mask == u128::from(other) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// The netmask of a prefix length (host order); lengths above 32 count as 32.
pub fn netmask(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0)
}

/// The IPv6 netmask of a prefix length; lengths above 128 count as 128.
pub fn netmask6(prefix_len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix_len.min(128)))
        .unwrap_or(0)
}

/// Says once per backend off the LB's segment how it is reached: by IPIP,
/// or (with `--forwarding l2`) not at all. One per family.
#[derive(Debug, Default)]
pub struct OffSegmentReport {
    /// (group, backend) already reported.
    reported: HashSet<(u32, IpAddr)>,
}

/// Backends reported one by one in one pass; the rest in one line, so that
/// thousands registering at once do not flood the log.
const REPORTED_ONE_BY_ONE: usize = 10;

impl OffSegmentReport {
    pub fn report<K: FamilyKey>(&mut self, reach: Reach, backends: &[(K, BackendEntry)]) {
        let Some((first, _)) = backends.first() else {
            self.reported.clear();
            return;
        };
        // Every backend of the list is of the family of the first.
        let segment = reach
            .segment_of(first.ip())
            .map_or_else(|| "none".to_owned(), |s| s.to_string());
        let (mut new, mut unreached) = (0usize, 0usize);
        for (key, _) in backends {
            let addr = key.ip();
            let id = (key.group_id(), addr);
            if reach.on_segment(addr) || !self.reported.insert(id) {
                continue;
            }
            new += 1;
            let reached = reach.reaches(addr);
            if new > REPORTED_ONE_BY_ONE {
                unreached += usize::from(!reached);
                continue;
            }
            if reached {
                info!(
                    backend = %addr,
                    "backend is off the LB's segment ({segment}): its traffic is wrapped in IP-in-IP, which its agent strips (backend-agent --vip)"
                );
            } else {
                warn!(
                    backend = %addr,
                    "backend is not on the LB's segment ({segment}) and --forwarding is l2: it gets no traffic (--forwarding auto reaches it by IP-in-IP)"
                );
            }
        }
        if let Some(more) = new.checked_sub(REPORTED_ONE_BY_ONE).filter(|&n| n > 0) {
            info!(
                more,
                unreached,
                "more backends off the LB's segment ({segment}) in this pass: reached by IP-in-IP, but for the unreached (--forwarding l2)"
            );
        }
        if self.reported.len() > backends.len() {
            let current: HashSet<(u32, IpAddr)> = backends
                .iter()
                .map(|(k, _)| (k.group_id(), k.ip()))
                .collect();
            self.reported.retain(|id| current.contains(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_netmask_covers_its_prefix_and_clamps_above_32() {
        assert_eq!(netmask(0), 0);
        assert_eq!(netmask(24), 0xffff_ff00);
        assert_eq!(netmask(32), u32::MAX);
        assert_eq!(netmask(40), u32::MAX);
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn segment_membership() {
        let segment = Segment {
            addr: ip("10.0.0.1"),
            prefix_len: 24,
        };
        assert!(segment.contains(ip("10.0.0.200")));
        assert!(!segment.contains(ip("10.0.1.2")));
        assert!(!segment.contains(ip("2001:db8::1")), "another family");
        let all = Segment {
            addr: ip("10.0.0.1"),
            prefix_len: 0,
        };
        assert!(all.contains(ip("192.0.2.1")));
        let segment6 = Segment {
            addr: ip("2001:db8:1::1"),
            prefix_len: 64,
        };
        assert!(segment6.contains(ip("2001:db8:1::99")));
        assert!(!segment6.contains(ip("2001:db8:2::1")));
        assert_eq!(netmask6(0), 0);
        assert_eq!(netmask6(200), u128::MAX);
    }

    #[test]
    fn a_backend_of_a_family_without_a_segment_is_wrapped() {
        let reach = Reach {
            mode: ForwardingMode::Auto,
            segment: Segment {
                addr: ip("10.0.0.1"),
                prefix_len: 24,
            },
            segment6: None,
        };
        assert!(!reach.wraps(ip("10.0.0.2")));
        assert!(reach.wraps(ip("2001:db8::2")));
        let l2 = Reach {
            mode: ForwardingMode::L2,
            ..reach
        };
        assert!(!l2.reaches(ip("2001:db8::2")));
    }
}
