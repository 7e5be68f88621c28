//! Weighted Maglev consistent hashing (Eisenbud et al., NSDI 2016), free of
//! I/O. The table maps a flow hash slot to a backend; XDP indexes it with
//! `hash % size`. Built in userspace, swapped into XDP atomically.
use std::net::Ipv4Addr;

use lb_common::MAX_MAGLEV_SIZE;

use crate::address::Address;

mod patch;
mod population;

pub use patch::patch;
use population::populate;

/// Default (and smallest) table size: prime, so every skip is co-prime with it.
pub const DEFAULT_TABLE_SIZE: u32 = 65537;
/// Table entries per backend that the size aims at: Maglev then keeps
/// each backend's share within about 1% of its weight's.
pub const ENTRIES_PER_BACKEND: u32 = 100;
/// Fewest entries per backend a table is built with (about 10% spread).
pub const MIN_ENTRIES_PER_BACKEND: u32 = 10;
/// The sizes a table grows through: primes just below powers of two, up
/// to `MAX_MAGLEV_SIZE`. Few steps, since a new size moves new flows
/// (Maglev keeps flows in place only at one size; established flows stay
/// by the connection table).
pub const TABLE_SIZES: [u32; 5] = [131_071, 262_139, 524_287, 1_048_573, MAX_MAGLEV_SIZE];

/// The table size for `backends` backends: the smallest of `min` and
/// `TABLE_SIZES` above it with `ENTRIES_PER_BACKEND` per backend, else the
/// largest. A function of the count alone, so that LBs that see the same
/// backends build the same table.
pub fn table_size(backends: usize, min: u32) -> u32 {
    let wanted = (backends as u64).saturating_mul(u64::from(ENTRIES_PER_BACKEND));
    std::iter::once(min)
        .chain(TABLE_SIZES.into_iter().filter(|&s| s > min))
        .find(|&s| u64::from(s) >= wanted)
        .unwrap_or(MAX_MAGLEV_SIZE.max(min))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaglevError {
    #[error("table size {size} is not a prime")]
    NotPrime { size: u32 },
    #[error("table size {size} gives {backends} backends fewer than {min} entries each", min = MIN_ENTRIES_PER_BACKEND)]
    TooSmall { size: u32, backends: usize },
}

/// A backend as Maglev sees it: its address (of the service's group's
/// family) and weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MaglevBackend<A = Ipv4Addr> {
    pub addr: A,
    pub weight: u16,
}

/// A built lookup table: entry `i` is the backend for hash slot `i`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevTable<A = Ipv4Addr> {
    /// Each entry's backend, `Address::NONE` for none.
    entries: Vec<A>,
}

pub fn is_prime(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d: &u32| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// FNV-1a over the address, finished with a splitmix64 step: stable across
/// builds and restarts, unlike std's hasher.
fn stable_hash<A: Address>(addr: A, seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &b in addr.octets().as_ref() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl<A: Address> MaglevTable<A> {
    /// Builds the table of `size` entries. Backends with weight 0 get no
    /// entries; with no usable backend every entry is empty.
    pub fn build(backends: &[MaglevBackend<A>], size: u32) -> Result<Self, MaglevError> {
        if !is_prime(size) {
            return Err(MaglevError::NotPrime { size });
        }
        let mut usable: Vec<MaglevBackend<A>> =
            backends.iter().copied().filter(|b| b.weight > 0).collect();
        // The result must not depend on the order the server list was read in.
        usable.sort();
        usable.dedup_by_key(|b| b.addr);
        if usable.len() as u64 * u64::from(MIN_ENTRIES_PER_BACKEND) > u64::from(size) {
            return Err(MaglevError::TooSmall {
                size,
                backends: usable.len(),
            });
        }
        let addresses: Vec<A> = usable.iter().map(|b| b.addr).collect();
        let entries = if usable.is_empty() {
            vec![A::NONE; size as usize]
        } else if usable.len() <= usize::from(u16::MAX) + 1 {
            // Half the memory written at random while populating.
            let owners: Vec<u16> = populate(&usable, size);
            owners.iter().map(|&o| addresses[usize::from(o)]).collect()
        } else {
            let owners: Vec<u32> = populate(&usable, size);
            owners.iter().map(|&o| addresses[o as usize]).collect()
        };
        Ok(Self { entries })
    }

    /// Every entry's backend, in order.
    pub fn iter(&self) -> impl Iterator<Item = Option<A>> + '_ {
        self.entries.iter().map(|e| (*e != A::NONE).then_some(*e))
    }

    /// Every entry: its backend, `Address::NONE` for none.
    pub fn entries(&self) -> &[A] {
        &self.entries
    }

    /// The entries, taken.
    pub fn into_entries(self) -> Vec<A> {
        self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn backends(weights: &[u16]) -> Vec<MaglevBackend> {
        weights
            .iter()
            .zip(0x0a01_0001u32..)
            .map(|(&weight, addr)| MaglevBackend {
                addr: Ipv4Addr::from(addr),
                weight,
            })
            .collect()
    }

    fn shares(table: &MaglevTable) -> HashMap<Ipv4Addr, f64> {
        let mut counts = HashMap::new();
        for addr in table.iter().flatten() {
            *counts.entry(addr).or_insert(0.0) += 1.0;
        }
        counts.values_mut().for_each(|c| *c /= table.len() as f64);
        counts
    }

    #[test]
    fn every_entry_filled_and_share_within_one_percent_of_weight() {
        for weights in [
            &[100, 100, 100][..],
            &[100, 200, 300],
            &[1, 10, 100, 1000],
            &[65535, 1],
        ] {
            let set = backends(weights);
            let table = MaglevTable::build(&set, DEFAULT_TABLE_SIZE).unwrap();
            assert!(table.iter().all(|e| e.is_some()));
            let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
            let got = shares(&table);
            for b in &set {
                let want = f64::from(b.weight) / total;
                let share = got.get(&b.addr).copied().unwrap_or(0.0);
                assert!(
                    (share - want).abs() <= 0.01,
                    "weights {weights:?}: {} has {share:.4}, want {want:.4}",
                    b.addr
                );
            }
        }
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth_and_little_else() {
        for n in [3usize, 10, 100] {
            let set = backends(&vec![100; n]);
            let before = MaglevTable::build(&set, DEFAULT_TABLE_SIZE).unwrap();
            let removed = set[n / 2].addr;
            let rest: Vec<_> = set.iter().copied().filter(|b| b.addr != removed).collect();
            let after = MaglevTable::build(&rest, DEFAULT_TABLE_SIZE).unwrap();
            let size = before.len() as f64;
            let moved = before
                .iter()
                .zip(after.iter())
                .filter(|(a, b)| a != b)
                .count() as f64
                / size;
            let collateral = before
                .iter()
                .zip(after.iter())
                .filter(|(a, b)| a != b && *a != Some(removed))
                .count() as f64
                / size;
            let expected = 1.0 / n as f64;
            assert!(
                (moved - expected).abs() <= 0.01 + expected * 0.1,
                "n={n}: moved {moved:.4}, expected about {expected:.4}"
            );
            // Entries of the remaining backends stay where they were (Maglev
            // allows a little disruption; it stays under 2% of the table).
            assert!(
                collateral <= 0.02,
                "n={n}: {collateral:.4} of the table moved between remaining backends"
            );
        }
    }

    #[test]
    fn order_of_the_input_does_not_matter() {
        let mut set = backends(&[100, 200, 300, 50]);
        let a = MaglevTable::build(&set, 1009).unwrap();
        set.reverse();
        assert_eq!(a, MaglevTable::build(&set, 1009).unwrap());
    }

    #[test]
    fn zero_weight_and_empty_sets_get_no_entries() {
        let table = MaglevTable::build(&backends(&[0, 0]), 1009).unwrap();
        assert!(table.iter().all(|e| e.is_none()));
        let set = backends(&[0, 100]);
        let table = MaglevTable::build(&set, 1009).unwrap();
        assert!(table.iter().all(|e| e == Some(set[1].addr)));
    }

    #[test]
    fn rejects_bad_sizes() {
        assert_eq!(
            MaglevTable::<Ipv4Addr>::build(&[], 65536),
            Err(MaglevError::NotPrime { size: 65536 })
        );
        assert_eq!(
            MaglevTable::build(&backends(&[1; 200]), 1009),
            Err(MaglevError::TooSmall {
                size: 1009,
                backends: 200
            })
        );
    }

    #[test]
    fn the_size_follows_the_backend_count_through_primes() {
        for size in std::iter::once(DEFAULT_TABLE_SIZE).chain(TABLE_SIZES) {
            assert!(is_prime(size), "{size}");
        }
        assert_eq!(table_size(0, DEFAULT_TABLE_SIZE), DEFAULT_TABLE_SIZE);
        assert_eq!(table_size(655, DEFAULT_TABLE_SIZE), DEFAULT_TABLE_SIZE);
        assert_eq!(table_size(656, DEFAULT_TABLE_SIZE), 131_071);
        assert_eq!(table_size(1_000, DEFAULT_TABLE_SIZE), 131_071);
        assert_eq!(table_size(10_000, DEFAULT_TABLE_SIZE), 1_048_573);
        assert_eq!(table_size(65_536, DEFAULT_TABLE_SIZE), MAX_MAGLEV_SIZE);
        assert_eq!(table_size(3, 1009), 1009);
        assert_eq!(table_size(20, 1009), 131_071);
    }

    #[test]
    fn a_thousand_backends_each_within_one_percent_of_its_share() {
        let set = backends(&[100; 1000]);
        let table = MaglevTable::build(&set, table_size(set.len(), DEFAULT_TABLE_SIZE)).unwrap();
        let want = 1.0 / 1000.0;
        let worst = shares(&table)
            .values()
            .map(|s| (s - want).abs() / want)
            .fold(0.0, f64::max);
        assert!(worst <= 0.01, "worst share off by {:.2}%", worst * 100.0);
    }

    /// The population as the paper writes it, one modulo per step: the
    /// table every LB builds must stay this one, whatever version built it.
    fn textbook(usable: &[MaglevBackend], size: u32) -> Vec<Option<Ipv4Addr>> {
        let m = u64::from(size);
        let mut entries = vec![None; size as usize];
        let max_weight = usable
            .iter()
            .map(|b| u64::from(b.weight))
            .max()
            .unwrap_or(1);
        let perms: Vec<(u64, u64)> = usable
            .iter()
            .map(|b| {
                (
                    stable_hash(b.addr, 0) % m,
                    stable_hash(b.addr, 0x9e37_79b9_7f4a_7c15) % (m - 1) + 1,
                )
            })
            .collect();
        let (mut next, mut credit) = (vec![0u64; usable.len()], vec![0u64; usable.len()]);
        let mut filled = 0;
        while filled < m {
            for (i, backend) in usable.iter().enumerate() {
                credit[i] += u64::from(backend.weight);
                if credit[i] < max_weight {
                    continue;
                }
                credit[i] -= max_weight;
                let (offset, skip) = perms[i];
                loop {
                    let slot = ((offset + next[i] * skip) % m) as usize;
                    next[i] += 1;
                    if entries[slot].is_none() {
                        entries[slot] = Some(backend.addr);
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    break;
                }
            }
        }
        entries
    }

    #[test]
    fn the_table_is_the_textbook_population_byte_for_byte() {
        for (weights, size) in [
            (vec![100; 3], 1009),
            (vec![100, 200, 300, 50], 65537),
            (vec![1, 10, 100, 1000, 65535], 65537),
            (
                (1..=700).map(|w| (w % 300 + 1) as u16).collect(),
                DEFAULT_TABLE_SIZE,
            ),
            (vec![100; 2000], 262_139),
        ] {
            let set = backends(&weights);
            let table = MaglevTable::build(&set, size).unwrap();
            let want = textbook(&set, size);
            assert!(
                table.iter().eq(want.iter().copied()),
                "{} backends, {size} entries: the table differs from the textbook's",
                set.len()
            );
        }
    }

    fn addresses(table: &MaglevTable) -> Vec<Ipv4Addr> {
        table.entries().to_vec()
    }

    #[test]
    fn a_patch_moves_only_what_the_change_needs() {
        let size = 65537;
        let set = backends(&[100; 100]);
        let table = addresses(&MaglevTable::build(&set, size).unwrap());
        // One leaves, one comes, one doubles its weight.
        let mut after: Vec<MaglevBackend> = set[1..].to_vec();
        after.push(MaglevBackend {
            addr: Ipv4Addr::new(10, 9, 9, 9),
            weight: 100,
        });
        after[10].weight = 200;
        let next = patch(&table, &set, &after);
        let owners: HashSet<Ipv4Addr> = after.iter().map(|b| b.addr).collect();
        assert!(
            next.iter().all(|e| owners.contains(e)),
            "an entry of no backend"
        );
        let count = |t: &[Ipv4Addr], a: Ipv4Addr| t.iter().filter(|e| **e == a).count();
        let total: f64 = after.iter().map(|b| f64::from(b.weight)).sum();
        for b in [after[10], after[after.len() - 1]] {
            let want = f64::from(size) * f64::from(b.weight) / total;
            let got = count(&next, b.addr) as f64;
            assert!(
                (got - want).abs() <= want * 0.05,
                "{}: {got} entries, want {want:.0}",
                b.addr
            );
        }
        // Entries move only to the backends that came or changed, or away
        // from the one that went: a few percent of the table, not all.
        let moved = table.iter().zip(&next).filter(|(a, b)| a != b).count() as f64;
        assert!(moved / f64::from(size) < 0.05, "{moved} entries moved");
        assert_eq!(patch(&table, &set, &set), table, "no change, no move");
        let mut shuffled = after.clone();
        shuffled.reverse();
        assert_eq!(patch(&table, &set, &shuffled), next, "order of the input");
    }

    #[test]
    fn a_patch_to_no_backend_empties_the_table_and_from_none_fills_it() {
        let set = backends(&[100, 100]);
        let table = addresses(&MaglevTable::build(&set, 1009).unwrap());
        let none = Ipv4Addr::UNSPECIFIED;
        assert!(patch(&table, &set, &[]).iter().all(|e| *e == none));
        let empty = vec![none; 1009];
        let filled = patch(&empty, &[], &set);
        assert!(filled.iter().all(|e| *e != none));
    }
}
