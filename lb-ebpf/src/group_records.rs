//! The group records of an IGMPv3 or MLDv2 report (protocol §4.2, §9):
//! one layout, with 4- or 16-byte addresses, walked once for both.
use aya_ebpf::programs::XdpContext;
use lb_common::{Counter, mld::MLD_V2_RECORD_LEN, wire::IGMP_V3_CHANGE_TO_INCLUDE};

use crate::{parse::ptr_at, stats::Membership};

/// Group records of one report that are examined; a host's report lists
/// its groups, and a longer list is cut here for the verifier's sake.
const MAX_RECORDS: u16 = 16;
/// Upper bound on a record offset; keeps the verifier's range finite.
const MAX_RECORD_OFFSET: usize = 1500;

/// Fixed part of a group record whose addresses are `N` bytes.
#[repr(C)]
struct GroupRecord<const N: usize> {
    kind: u8,
    aux_words: u8,
    sources: [u8; 2],
    group: [u8; N],
}
const _: () = assert!(size_of::<GroupRecord<16>>() == MLD_V2_RECORD_LEN);

/// What a report's records held for us.
pub enum Records {
    /// A record for a configured group, counted.
    Recorded(Counter),
    NoGroupOfOurs,
    /// A record that the message claims but does not hold.
    Truncated,
}

/// Walks the `count` records from `offset` to `end`; the first one that
/// `record` counts (a record for a configured group) decides. A record
/// CHANGE_TO_INCLUDE with no sources is a leave, any other a report.
#[inline(always)]
pub fn walk<const N: usize>(
    ctx: &XdpContext,
    (mut offset, end): (usize, usize),
    count: u16,
    mut record: impl FnMut([u8; N], Membership) -> Option<Counter>,
) -> Records {
    for index in 0..MAX_RECORDS {
        if index >= count || offset > MAX_RECORD_OFFSET {
            break;
        }
        if offset + size_of::<GroupRecord<N>>() > end {
            return Records::Truncated;
        }
        let Some(rec) = ptr_at::<GroupRecord<N>>(ctx, offset) else {
            return Records::Truncated;
        };
        // SAFETY: ptr_at checked the bounds.
        let rec = unsafe { &*rec };
        let sources = u16::from_be_bytes(rec.sources);
        let membership = if rec.kind == IGMP_V3_CHANGE_TO_INCLUDE && sources == 0 {
            Membership::Leave
        } else {
            Membership::Report
        };
        if let Some(counter) = record(rec.group, membership) {
            return Records::Recorded(counter);
        }
        offset +=
            size_of::<GroupRecord<N>>() + usize::from(sources) * N + usize::from(rec.aux_words) * 4;
    }
    Records::NoGroupOfOurs
}
