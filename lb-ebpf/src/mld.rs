//! MLD membership reports for the configured IPv6 groups (protocol §9):
//! recorded per group for liveness, as IGMP reports are, and always
//! passed on. Leaves (Done, an MLDv2 CHANGE_TO_INCLUDE with no sources)
//! come from the backend's link-local address and are not tied to a
//! backend yet: they pass uncounted, and the backend ages out.
use aya_ebpf::programs::XdpContext;
use lb_common::{
    Counter,
    mld::{
        MLD_OFF_ADDRESS, MLD_V1_LEN, MLD_V1_REPORT, MLD_V2_FIRST_RECORD, MLD_V2_OFF_RECORDS,
        MLD_V2_RECORD_LEN, MLD_V2_REPORT,
    },
    wire::IGMP_V3_CHANGE_TO_INCLUDE,
};

use crate::{
    maps::GROUP_ADDRS6,
    parse::{Ipv6Packet, ptr_at},
    stats::{self, GroupEvent},
};

/// Group records of one MLDv2 report that are examined (as for IGMPv3).
const MAX_V2_RECORDS: u16 = 16;
/// Upper bound on a record offset; keeps the verifier's range finite.
const MAX_RECORD_OFFSET: usize = 1500;

/// Fixed part of an MLDv2 group record (the same record types as IGMPv3's).
#[repr(C)]
struct V2Record {
    kind: u8,
    aux_words: u8,
    sources: [u8; 2],
    group: [u8; 16],
}
const _: () = assert!(size_of::<V2Record>() == MLD_V2_RECORD_LEN);

#[inline(always)]
pub fn handle(ctx: &XdpContext, packet: &Ipv6Packet) -> Counter {
    // Type and the v2 record count; an MLDv1 message is 24 bytes.
    let Some(head) = ptr_at::<[u8; MLD_V2_FIRST_RECORD]>(ctx, packet.l4_offset) else {
        return Counter::Malformed;
    };
    // SAFETY: ptr_at checked the bounds.
    let head = unsafe { &*head };
    let recorded = match head[0] {
        MLD_V1_REPORT => v1_group(ctx, packet).and_then(record),
        MLD_V2_REPORT => {
            let records =
                u16::from_be_bytes([head[MLD_V2_OFF_RECORDS], head[MLD_V2_OFF_RECORDS + 1]]);
            v2_report(ctx, packet, records)
        }
        _ => None,
    };
    recorded.unwrap_or(Counter::Ignored)
}

/// The group of an MLDv1 report, if the message holds one.
#[inline(always)]
fn v1_group(ctx: &XdpContext, packet: &Ipv6Packet) -> Option<[u8; 16]> {
    if packet.l4_len < MLD_V1_LEN {
        return None;
    }
    let group = ptr_at::<[u8; 16]>(ctx, packet.l4_offset + MLD_OFF_ADDRESS)?;
    // SAFETY: ptr_at checked the bounds.
    Some(unsafe { *group })
}

/// Walks the records of an MLDv2 report; the first record that reports
/// membership of a configured group counts.
#[inline(always)]
fn v2_report(ctx: &XdpContext, packet: &Ipv6Packet, records: u16) -> Option<Counter> {
    let end = packet.l4_offset + packet.l4_len;
    let mut offset = packet.l4_offset + MLD_V2_FIRST_RECORD;
    for index in 0..MAX_V2_RECORDS {
        if index >= records || offset > MAX_RECORD_OFFSET || offset + MLD_V2_RECORD_LEN > end {
            break;
        }
        let rec = ptr_at::<V2Record>(ctx, offset)?;
        // SAFETY: ptr_at checked the bounds.
        let rec = unsafe { &*rec };
        let sources = u16::from_be_bytes(rec.sources);
        let leaving = rec.kind == IGMP_V3_CHANGE_TO_INCLUDE && sources == 0;
        if !leaving && let Some(counter) = record(rec.group) {
            return Some(counter);
        }
        offset += MLD_V2_RECORD_LEN + usize::from(sources) * 16 + usize::from(rec.aux_words) * 4;
    }
    None
}

/// Records a report for `group` if it is one of ours.
#[inline(always)]
fn record(group: [u8; 16]) -> Option<Counter> {
    // SAFETY: the value is a plain u32 that only lb-user writes.
    let group_id = *unsafe { GROUP_ADDRS6.get(&group) }?;
    stats::group_add(group_id, GroupEvent::Report, 1);
    Some(Counter::MldReport)
}
