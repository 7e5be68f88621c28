//! Where a backend is, seen from the LB: on its segment (layer 2) or
//! beyond it (IPIP), as XDP decides it with the same forwarding mode.
use std::net::Ipv4Addr;

use foldhash::HashSet;
use lb_common::{BackendEntry, BackendKey, ForwardingMode};
use tracing::{info, warn};

/// The LB's own segment: backends on it are reached at layer 2.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

/// How backends are reached: the forwarding mode and the LB's segment.
#[derive(Clone, Copy, Debug)]
pub struct Reach {
    pub mode: ForwardingMode,
    pub segment: Segment,
}

impl Reach {
    /// Whether traffic can reach `backend` at all (`l2` reaches only the segment).
    pub fn reaches(&self, backend: Ipv4Addr) -> bool {
        self.mode != ForwardingMode::L2 || self.segment.contains(backend)
    }

    /// Whether traffic to `backend` is wrapped in IPIP (as XDP decides it).
    pub fn wraps(&self, backend: Ipv4Addr) -> bool {
        self.mode.wraps(
            backend.octets(),
            self.segment.addr.octets(),
            netmask(self.segment.prefix_len).to_be_bytes(),
        )
    }
}

impl Segment {
    pub fn contains(&self, other: Ipv4Addr) -> bool {
        let mask = netmask(self.prefix_len);
        u32::from(self.addr) & mask == u32::from(other) & mask
    }
}

/// The netmask of a prefix length (host order); lengths above 32 count as 32.
pub fn netmask(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0)
}

/// Says once per backend off the LB's segment how it is reached: by IPIP,
/// or (with `--forwarding l2`) not at all.
#[derive(Debug, Default)]
pub struct OffSegmentReport {
    /// (group, backend) already reported.
    reported: HashSet<(u32, [u8; 4])>,
}

/// Backends reported one by one in one pass; the rest in one line, so that
/// thousands registering at once do not flood the log.
const REPORTED_ONE_BY_ONE: usize = 10;

impl OffSegmentReport {
    pub fn report(&mut self, reach: Reach, backends: &[(BackendKey, BackendEntry)]) {
        let segment = reach.segment;
        let (mut new, mut unreached) = (0usize, 0usize);
        for (key, _) in backends {
            let addr = Ipv4Addr::from(key.addr);
            let id = (key.group_id, key.addr);
            if segment.contains(addr) || !self.reported.insert(id) {
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
                    "backend is off the LB's segment ({}/{}): its traffic is wrapped in IPIP, which its agent strips (backend-agent --vip)",
                    segment.addr, segment.prefix_len
                );
            } else {
                warn!(
                    backend = %addr,
                    "backend is not on the LB's segment ({}/{}) and --forwarding is l2: it gets no traffic (--forwarding auto reaches it by IPIP)",
                    segment.addr, segment.prefix_len
                );
            }
        }
        if let Some(more) = new.checked_sub(REPORTED_ONE_BY_ONE).filter(|&n| n > 0) {
            info!(
                more,
                unreached,
                "more backends off the LB's segment ({}/{}) in this pass: reached by IPIP, but for the unreached (--forwarding l2)",
                segment.addr,
                segment.prefix_len
            );
        }
        if self.reported.len() > backends.len() {
            let current: HashSet<(u32, [u8; 4])> =
                backends.iter().map(|(k, _)| (k.group_id, k.addr)).collect();
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

    const SEGMENT: Segment = Segment {
        addr: Ipv4Addr::new(10, 0, 0, 1),
        prefix_len: 24,
    };

    #[test]
    fn segment_membership() {
        assert!(SEGMENT.contains(Ipv4Addr::new(10, 0, 0, 200)));
        assert!(!SEGMENT.contains(Ipv4Addr::new(10, 0, 1, 2)));
        let all = Segment {
            addr: Ipv4Addr::new(10, 0, 0, 1),
            prefix_len: 0,
        };
        assert!(all.contains(Ipv4Addr::new(192, 0, 2, 1)));
    }
}
