//! A change of backends applied to a table in proportion to the change.
use std::collections::HashSet;

use super::{MaglevBackend, population::Walk};
use crate::address::Address;

/// The table for `after` made from `table`, the table of `before`, by
/// moving only what the change needs: the entries of backends that went
/// (or whose weight changed) go to the owner of the next entry that keeps
/// its owner, and each backend that came (or changed) takes its share of
/// the table, `size * weight / total`, along its permutation. A function
/// of the three alone, so that LBs that hold the same table and see the
/// same change make the same one; the full population of `after`
/// (`MaglevTable::build`) then replaces it when the backends are quiet.
/// An entry of no backend is `Address::NONE`.
pub fn patch<A: Address>(
    table: &[A],
    before: &[MaglevBackend<A>],
    after: &[MaglevBackend<A>],
) -> Vec<A> {
    let free = A::NONE;
    let usable = |set: &[MaglevBackend<A>]| {
        let mut usable: Vec<MaglevBackend<A>> =
            set.iter().copied().filter(|b| b.weight > 0).collect();
        usable.sort();
        usable.dedup_by_key(|b| b.addr);
        usable
    };
    let (before, after) = (usable(before), usable(after));
    if after.is_empty() || table.is_empty() {
        return vec![free; table.len()];
    }
    let came: Vec<MaglevBackend<A>> = after
        .iter()
        .copied()
        .filter(|b| before.binary_search(b).is_err())
        .collect();
    // Went, or changed weight: their entries are handed on.
    let gone: Vec<A> = before
        .iter()
        .filter(|b| after.binary_search(b).is_err())
        .map(|b| b.addr)
        .collect();
    // A patch scans the whole table: a bitmap of the gone addresses' low
    // 12 bits clears most entries with one load, the set the rest.
    let bit = |a: &A| {
        let octets = a.octets();
        let [.., high, low] = octets.as_ref() else {
            return 0;
        };
        usize::from(u16::from_be_bytes([*high, *low]) & 0xfff)
    };
    let mut suspects = [0u64; 64];
    for a in &gone {
        suspects[bit(a) / 64] |= 1 << (bit(a) % 64);
    }
    let gone: foldhash::HashSet<A> = gone.into_iter().collect();
    let mut next: Vec<A> = table
        .iter()
        .map(|e| {
            let suspect = suspects[bit(e) / 64] & (1 << (bit(e) % 64)) != 0;
            if (suspect && gone.contains(e)) || *e == free {
                free
            } else {
                *e
            }
        })
        .collect();
    let size = table.len() as u32;
    let total: u64 = after.iter().map(|b| u64::from(b.weight)).sum();
    let mut claimed: HashSet<u32> = HashSet::new();
    for backend in &came {
        let share = (u64::from(size) * u64::from(backend.weight) / total).max(1);
        let mut walk = Walk::new(backend.addr, size);
        let mut taken = 0;
        // A permutation visits every entry once: at most `size` steps.
        for _ in 0..size {
            if taken == share {
                break;
            }
            let entry = walk.position;
            walk.position = (walk.position + walk.skip) % size;
            if claimed.insert(entry) {
                next[entry as usize] = backend.addr;
                taken += 1;
            }
        }
    }
    // Every entry left free takes the owner of the next one that has one
    // (going round), which is a backend of `after`.
    let Some(first) = next.iter().position(|e| *e != free) else {
        return next;
    };
    let mut owner = next[first];
    for entry in next.iter_mut().rev() {
        if *entry == free {
            *entry = owner;
        } else {
            owner = *entry;
        }
    }
    next
}
