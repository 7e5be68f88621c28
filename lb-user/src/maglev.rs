//! Weighted Maglev consistent hashing (Eisenbud et al., NSDI 2016), free of
//! I/O. The table maps a flow hash slot to a backend; XDP indexes it with
//! `hash % size`. Built in userspace, swapped into XDP atomically.
use std::{collections::HashSet, net::Ipv4Addr};

use lb_common::MAX_MAGLEV_SIZE;

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

/// A backend as Maglev sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MaglevBackend {
    pub addr: Ipv4Addr,
    pub weight: u16,
}

/// A built lookup table: entry `i` is the backend for hash slot `i`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevTable {
    /// Each entry's backend as XDP reads it: the address in network order,
    /// all zeros for none.
    entries: Vec<[u8; 4]>,
}

pub fn is_prime(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d: &u32| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// FNV-1a over the address, finished with a splitmix64 step: stable across
/// builds and restarts, unlike std's hasher.
fn stable_hash(addr: Ipv4Addr, seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in addr.octets() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl MaglevTable {
    /// Builds the table of `size` entries. Backends with weight 0 get no
    /// entries; with no usable backend every entry is empty.
    pub fn build(backends: &[MaglevBackend], size: u32) -> Result<Self, MaglevError> {
        if !is_prime(size) {
            return Err(MaglevError::NotPrime { size });
        }
        let mut usable: Vec<MaglevBackend> =
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
        let addresses: Vec<[u8; 4]> = usable.iter().map(|b| b.addr.octets()).collect();
        let entries = if usable.is_empty() {
            vec![[0; 4]; size as usize]
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
    pub fn iter(&self) -> impl Iterator<Item = Option<Ipv4Addr>> + '_ {
        self.entries
            .iter()
            .map(|e| (*e != [0; 4]).then(|| Ipv4Addr::from(*e)))
    }

    /// Every entry as XDP reads it: the backend's address in network
    /// order, all zeros for none.
    pub fn octets(&self) -> &[[u8; 4]] {
        &self.entries
    }

    /// The entries, taken.
    pub fn into_octets(self) -> Vec<[u8; 4]> {
        self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The table for `after` made from `table`, the table of `before`, by
/// moving only what the change needs: the entries of backends that went
/// (or whose weight changed) go to the owner of the next entry that keeps
/// its owner, and each backend that came (or changed) takes its share of
/// the table, `size * weight / total`, along its permutation. A function
/// of the three alone, so that LBs that hold the same table and see the
/// same change make the same one; the full population of `after`
/// (`MaglevTable::build`) then replaces it when the backends are quiet.
/// Entries are addresses in network order, all zeros for none.
pub fn patch(table: &[[u8; 4]], before: &[MaglevBackend], after: &[MaglevBackend]) -> Vec<[u8; 4]> {
    const FREE: [u8; 4] = [0; 4];
    let usable = |set: &[MaglevBackend]| {
        let mut usable: Vec<MaglevBackend> = set.iter().copied().filter(|b| b.weight > 0).collect();
        usable.sort();
        usable.dedup_by_key(|b| b.addr);
        usable
    };
    let (before, after) = (usable(before), usable(after));
    if after.is_empty() || table.is_empty() {
        return vec![FREE; table.len()];
    }
    let came: Vec<MaglevBackend> = after
        .iter()
        .copied()
        .filter(|b| before.binary_search(b).is_err())
        .collect();
    // Went, or changed weight: their entries are handed on.
    let gone: Vec<[u8; 4]> = before
        .iter()
        .filter(|b| after.binary_search(b).is_err())
        .map(|b| b.addr.octets())
        .collect();
    // A patch scans the whole table: a bitmap of the gone addresses' low
    // 12 bits clears most entries with one load, the set the rest.
    let bit = |a: &[u8; 4]| usize::from(u16::from_be_bytes([a[2], a[3]]) & 0xfff);
    let mut suspects = [0u64; 64];
    for a in &gone {
        suspects[bit(a) / 64] |= 1 << (bit(a) % 64);
    }
    let gone: foldhash::HashSet<[u8; 4]> = gone.into_iter().collect();
    let mut next: Vec<[u8; 4]> = table
        .iter()
        .map(|e| {
            let suspect = suspects[bit(e) / 64] & (1 << (bit(e) % 64)) != 0;
            if (suspect && gone.contains(e)) || *e == FREE {
                FREE
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
                next[entry as usize] = backend.addr.octets();
                taken += 1;
            }
        }
    }
    // Every entry left free takes the owner of the next one that has one
    // (going round), which is a backend of `after`.
    let Some(first) = next.iter().position(|e| *e != FREE) else {
        return next;
    };
    let mut owner = next[first];
    for entry in next.iter_mut().rev() {
        if *entry == FREE {
            *entry = owner;
        } else {
            owner = *entry;
        }
    }
    next
}

/// Maglev's population: the backends take turns (weighted: a backend takes
/// one each time its accumulated weight reaches the largest weight), and
/// each takes the next free entry of its permutation `offset + j * skip`
/// (mod `size`). The same table as the paper's, found faster:
/// - the permutation is walked by adding `skip` (the size is below 2^22,
///   so no sum overflows), not with a modulo per step;
/// - free entries are looked up in a bitmap that stays in the CPU's cache,
///   which the table itself does not;
/// - once few entries are free, a backend's next one is found among them
///   instead: the free entry it reaches first is the one whose place in
///   its permutation, `(entry - offset) / skip` (mod `size`), is smallest
///   (every entry before its current place is taken), which costs one
///   product per free entry instead of `size / free` probes.
fn populate<Owner: BackendIndex>(usable: &[MaglevBackend], size: u32) -> Vec<Owner> {
    let mut walks: Vec<Walk> = usable.iter().map(|b| Walk::new(b.addr, size)).collect();
    let max_weight = usable.iter().map(|b| b.weight).max().unwrap_or(1);
    let weighted = usable.iter().any(|b| b.weight != max_weight);
    let mut credit = vec![0u32; usable.len()];
    let mut taken = vec![0u64; (size as usize).div_ceil(64)];
    let mut entries = vec![Owner::default(); size as usize];
    let mut left = size;
    // Below this many free entries a search among them beats probing.
    let tail = (f64::from(size).sqrt() as u32).max(1);
    let mut free: Option<Vec<u32>> = None;
    let modulus = Modulus::new(size);
    while left > 0 {
        for (i, backend) in usable.iter().enumerate() {
            if weighted {
                credit[i] += u32::from(backend.weight);
                if credit[i] < u32::from(max_weight) {
                    continue;
                }
                credit[i] -= u32::from(max_weight);
            }
            let slot = match &mut free {
                None => walks[i].next_free(&mut taken, size),
                Some(free) => walks[i].take_first_of(free, &modulus),
            };
            entries[slot as usize] = Owner::of(i);
            left -= 1;
            if left == 0 {
                break;
            }
            if left == tail && free.is_none() {
                free = Some(
                    (0..size)
                        .filter(|&e| taken[e as usize / 64] & (1 << (e % 64)) == 0)
                        .collect(),
                );
            }
        }
    }
    entries
}

/// A backend's index among the usable ones, as `populate` stores it: u16
/// up to 65,536 backends, u32 above.
trait BackendIndex: Copy + Default {
    fn of(index: usize) -> Self;
}

impl BackendIndex for u16 {
    fn of(index: usize) -> Self {
        // `build` chooses u16 only for up to 65,536 backends.
        index as u16
    }
}

impl BackendIndex for u32 {
    fn of(index: usize) -> Self {
        // The server list holds fewer than 2^32 backends.
        index as u32
    }
}

/// Where one backend is in its permutation of the table's entries.
struct Walk {
    offset: u32,
    skip: u32,
    /// The next entry of the permutation.
    position: u32,
    /// `skip`'s inverse modulo the size, once a search among free entries
    /// needs it.
    inverse: Option<u64>,
}

impl Walk {
    fn new(addr: Ipv4Addr, size: u32) -> Self {
        let m = u64::from(size);
        // Both below the size, which fits in u32.
        let offset = (stable_hash(addr, 0) % m) as u32;
        let skip = (stable_hash(addr, 0x9e37_79b9_7f4a_7c15) % (m - 1) + 1) as u32;
        Self {
            offset,
            skip,
            position: offset,
            inverse: None,
        }
    }

    /// Takes the next entry of the permutation that `taken` says is free.
    fn next_free(&mut self, taken: &mut [u64], size: u32) -> u32 {
        let mut p = self.position;
        let slot = loop {
            let slot = p;
            p += self.skip;
            if p >= size {
                p -= size;
            }
            let (word, bit) = (slot as usize / 64, 1u64 << (slot % 64));
            if taken[word] & bit == 0 {
                taken[word] |= bit;
                break slot;
            }
        };
        self.position = p;
        slot
    }

    /// Takes, out of `free`, the entry this backend's permutation reaches
    /// first.
    fn take_first_of(&mut self, free: &mut Vec<u32>, modulus: &Modulus) -> u32 {
        let m = u64::from(modulus.size);
        let inverse = *self
            .inverse
            .get_or_insert_with(|| modulus.pow(u64::from(self.skip), m - 2));
        let place =
            |entry: u32| modulus.reduce((u64::from(entry) + m - u64::from(self.offset)) * inverse);
        let (index, _) = free
            .iter()
            .enumerate()
            .min_by_key(|&(_, &entry)| place(entry))
            .expect("an entry is free while entries are left");
        free.swap_remove(index)
    }
}

/// Reduction modulo the table's size (a prime below 2^22) by one
/// multiplication (Barrett), for the products of the search among free
/// entries, which are below 2^44.
struct Modulus {
    size: u32,
    /// floor(2^64 / size).
    reciprocal: u64,
}

impl Modulus {
    fn new(size: u32) -> Self {
        Self {
            size,
            reciprocal: u64::MAX / u64::from(size),
        }
    }

    fn reduce(&self, x: u64) -> u64 {
        let m = u64::from(self.size);
        let q = ((u128::from(x) * u128::from(self.reciprocal)) >> 64) as u64;
        let r = x - q * m;
        if r >= m { r - m } else { r }
    }

    /// `base^exp` modulo the size (Fermat's little theorem gives inverses).
    fn pow(&self, mut base: u64, mut exp: u64) -> u64 {
        let mut result = 1;
        base = self.reduce(base);
        while exp > 0 {
            if exp & 1 == 1 {
                result = self.reduce(result * base);
            }
            base = self.reduce(base * base);
            exp >>= 1;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

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
            MaglevTable::build(&[], 65536),
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

    fn addresses(table: &MaglevTable) -> Vec<[u8; 4]> {
        table.octets().to_vec()
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
        let owners: HashSet<[u8; 4]> = after.iter().map(|b| b.addr.octets()).collect();
        assert!(
            next.iter().all(|e| owners.contains(e)),
            "an entry of no backend"
        );
        let count = |t: &[[u8; 4]], a: Ipv4Addr| t.iter().filter(|e| **e == a.octets()).count();
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
        assert!(patch(&table, &set, &[]).iter().all(|e| *e == [0; 4]));
        let empty = vec![[0; 4]; 1009];
        let filled = patch(&empty, &[], &set);
        assert!(filled.iter().all(|e| *e != [0; 4]));
    }
}
