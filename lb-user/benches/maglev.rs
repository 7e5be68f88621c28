//! Maglev tables at scale: for 1,000, 10,000 and 65,536 backends of equal
//! weight, the table size the count gives (`maglev::table_size`), the time
//! to build it (median of 3), and how far the backend furthest from its
//! share is from it. Pure computation; no root needed.
//! Run: `cargo bench -p lb-user --bench maglev` (or `cargo xtask bench`).
use std::{collections::HashMap, net::Ipv4Addr, time::Instant};

use lb_user::maglev::{DEFAULT_TABLE_SIZE, MaglevBackend, MaglevTable, table_size};

const ROUNDS: usize = 3;

fn main() {
    println!("Maglev tables, equal weights, build time median of {ROUNDS}");
    println!("| backends | entries | entries per backend | build | worst share vs ideal |");
    println!("|---:|---:|---:|---:|---:|");
    for count in [1_000u32, 10_000, 65_536] {
        let set: Vec<MaglevBackend> = (0..count)
            .map(|i| MaglevBackend {
                addr: Ipv4Addr::from(0x0a40_0000 + i),
                weight: 100,
            })
            .collect();
        let size = table_size(set.len(), DEFAULT_TABLE_SIZE);
        let mut times = Vec::new();
        let mut table = None;
        for _ in 0..ROUNDS {
            let start = Instant::now();
            table = Some(MaglevTable::build(&set, size).expect("table"));
            times.push(start.elapsed());
        }
        times.sort();
        let table = table.expect("built");
        let mut counts: HashMap<Ipv4Addr, u64> = HashMap::new();
        for addr in table.iter().flatten() {
            *counts.entry(addr).or_default() += 1;
        }
        let ideal = f64::from(size) / f64::from(count);
        let worst = set
            .iter()
            .map(|b| (counts.get(&b.addr).copied().unwrap_or(0) as f64 - ideal).abs() / ideal)
            .fold(0.0, f64::max);
        println!(
            "| {count} | {size} | {:.1} | {:.0} ms | {:.2}% |",
            ideal,
            times[ROUNDS / 2].as_secs_f64() * 1000.0,
            worst * 100.0
        );
    }
}
