//! The MAGLEV pool's ranges, given out to the services' table slots.
use lb_common::MAGLEV_POOL;

/// The MAGLEV pool, parcelled out in ranges (offset, length) to the
/// services' slots; first fit.
#[derive(Debug, Default)]
pub struct Pool {
    used: Vec<(u32, u32)>,
}

impl Pool {
    /// Marks a range as taken (a slot adopted from an earlier instance);
    /// false if it does not fit in the pool or overlaps a taken one.
    pub fn reserve(&mut self, offset: u32, len: u32) -> bool {
        let end = u64::from(offset) + u64::from(len);
        let free = end <= u64::from(MAGLEV_POOL)
            && self.used.iter().all(|&(o, l)| {
                end <= u64::from(o) || u64::from(offset) >= u64::from(o) + u64::from(l)
            });
        if free {
            self.used.push((offset, len));
            self.used.sort_unstable();
        }
        free
    }

    /// A free range of `len` entries, if the pool has one.
    pub fn alloc(&mut self, len: u32) -> Option<u32> {
        let mut start = 0u64;
        for &(o, l) in &self.used {
            if u64::from(o) - start >= u64::from(len) {
                break;
            }
            start = u64::from(o) + u64::from(l);
        }
        (start + u64::from(len) <= u64::from(MAGLEV_POOL)).then(|| {
            let offset = start as u32;
            self.used.push((offset, len));
            self.used.sort_unstable();
            offset
        })
    }

    pub fn free(&mut self, offset: u32) {
        self.used.retain(|&(o, _)| o != offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_gives_out_first_fit_ranges_and_refuses_overlaps() {
        let mut pool = Pool::default();
        assert_eq!(pool.alloc(100), Some(0));
        assert_eq!(pool.alloc(50), Some(100));
        assert!(!pool.reserve(120, 10), "overlaps a taken range");
        assert!(pool.reserve(1000, 10));
        pool.free(0);
        assert_eq!(pool.alloc(80), Some(0), "first fit reuses the freed range");
        assert_eq!(pool.alloc(30), Some(150));
        assert!(!pool.reserve(MAGLEV_POOL - 5, 10), "past the pool");
        assert_eq!(pool.alloc(MAGLEV_POOL), None);
    }
}
