//! Maglev's population of a whole table, as fast as this machine allows
//! while staying the textbook's table byte for byte.
use super::{MaglevBackend, stable_hash};
use crate::address::Address;

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
pub(super) fn populate<Owner: BackendIndex, A: Address>(
    usable: &[MaglevBackend<A>],
    size: u32,
) -> Vec<Owner> {
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
pub(super) trait BackendIndex: Copy + Default {
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
pub(super) struct Walk {
    offset: u32,
    pub(super) skip: u32,
    /// The next entry of the permutation.
    pub(super) position: u32,
    /// `skip`'s inverse modulo the size, once a search among free entries
    /// needs it.
    inverse: Option<u64>,
}

impl Walk {
    pub(super) fn new<A: Address>(addr: A, size: u32) -> Self {
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
