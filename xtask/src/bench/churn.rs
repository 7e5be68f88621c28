//! The control plane under churn: a swarm of N backends of which some
//! leave (LEAVING) and as many new ones join every query period, behind
//! one VIP service, so that every change rebuilds its Maglev table.

use std::{thread::sleep, time::Duration};

use anyhow::Context;
use lb_tests::{Bridge, Topology, cpu_time, median, registered, wait_for};

use super::LB;

/// (backends, leave + join per period) of the churn table.
const CASES: [(u32, u32); 2] = [(20_000, 10), (65_536, 30)];
/// How long lb-user's CPU and its rebuilds are watched under churn.
const WINDOW: Duration = Duration::from_secs(10);

pub fn churn() -> anyhow::Result<()> {
    println!(
        "\ncontrol plane under churn (swarm, default timers P = 1 s, release build, one VIP service)"
    );
    println!(
        "| backends | leave + join per P | lb-user CPU | change -> active table p50 / p99 / max | tables per s | entries written per change | patch / population p50 | registered -> table in place |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (count, churn) in CASES {
        let topo = Topology::new(2, Bridge::Flooding)?;
        topo.run(|topo| churn_row(topo, count, churn))?;
    }
    Ok(())
}

/// One "forwarding table rebuilt" line of lb-user's log.
struct Rebuild {
    unix_ns: u64,
    backends: u64,
    written: u64,
    built_ms: u64,
    change_ms: Option<u64>,
    /// A full population, not a patch.
    population: bool,
}

fn churn_row(topo: &Topology, count: u32, churn: u32) -> anyhow::Result<()> {
    let vip = topo.segment_address(100).to_string();
    // A short second-chance window: as on an LB that has run for a while,
    // most backends are older than it, so both tables follow the churn.
    let args = [
        "--vip",
        &vip,
        "--service",
        "tcp:80",
        "--second-chance-window",
        "5s",
    ];
    let (lb, pin) = topo.start_lb(LB, "churn", &args)?;
    let [a, b, _, _] = topo.host(LB).addr.octets();
    let first = std::net::Ipv4Addr::new(a, b, 128, 1).to_string();
    let (count_arg, churn_arg) = (count.to_string(), churn.to_string());
    let mut swarm = topo.spawn(
        1,
        "swarm",
        "swarm",
        &["eth0", &first, &count_arg, "--churn", &churn_arg],
    )?;
    wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
        topo.status(&pin)
            .ok()
            .filter(|s| registered(s).len() == count as usize)
    })
    .with_context(|| format!("{count} backends did not register"))?;
    // Churn starts in the fourth round; two rounds more to settle.
    let rounds = |swarm: &lb_tests::Proc| swarm.log_text().lines().count();
    wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        (rounds(&swarm) >= 6).then_some(())
    })
    .context("the swarm did not churn")?;
    let (cpu_before, window_start) = (cpu_time(lb.pid())?, lb_host::system::realtime_ns());
    let steady = std::time::Instant::now();
    sleep(WINDOW);
    let cpu = (cpu_time(lb.pid())? - cpu_before).as_secs_f64() / steady.elapsed().as_secs_f64();
    let window_end = lb_host::system::realtime_ns();
    swarm.signal(libc::SIGKILL);
    swarm.wait_exit(Duration::from_secs(5))?;

    let rebuilds: Vec<Rebuild> = lb.log_text().lines().filter_map(rebuild).collect();
    let first_query_ns = swarm
        .log_text()
        .lines()
        .next()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["query_unix_ns"].as_u64())
        .context("the swarm's first round")?;
    let in_place = rebuilds
        .iter()
        .find(|r| r.backends == u64::from(count))
        .context("no table of all the backends")?;
    let in_window: Vec<&Rebuild> = rebuilds
        .iter()
        .filter(|r| (window_start..window_end).contains(&r.unix_ns))
        .collect();
    let mut latencies: Vec<f64> = in_window
        .iter()
        .filter_map(|r| r.change_ms.map(|ms| ms as f64))
        .collect();
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let seconds = WINDOW.as_secs_f64();
    let changes = 2.0 * f64::from(churn) * seconds;
    let written: u64 = in_window.iter().map(|r| r.written).sum();
    // None in the window: every build took longer than it.
    let median_of = |population: bool| {
        let times: Vec<f64> = in_window
            .iter()
            .filter(|r| r.population == population)
            .map(|r| r.built_ms as f64)
            .collect();
        if times.is_empty() {
            f64::NAN
        } else {
            median(times)
        }
    };
    let (patches, populations) = (median_of(false), median_of(true));
    println!(
        "| {count} | {churn} + {churn} | {:.1}% of a core | {:.0} / {:.0} / {:.0} ms | {:.1} | {:.0} | {patches:.0} / {populations:.0} ms | {:.2} s |",
        cpu * 100.0,
        percentile(0.5),
        percentile(0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        in_window.len() as f64 / seconds,
        written as f64 / changes,
        in_place.unix_ns.saturating_sub(first_query_ns) as f64 / 1e9,
    );
    Ok(())
}

/// The fields of a "forwarding table rebuilt" line, with its timestamp.
fn rebuild(line: &str) -> Option<Rebuild> {
    // The current table's: the previous one's upkeep shows in the CPU.
    let current = line.contains("table=current") || line.contains("table=\"current\"");
    if !line.contains("forwarding table rebuilt") || !current {
        return None;
    }
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Rebuild {
        unix_ns: rfc3339_unix_ns(line.split_whitespace().next()?)?,
        backends: field("backends")?,
        written: field("written")?,
        built_ms: field("built_ms")?,
        change_ms: field("change_ms"),
        population: line.contains("how=\"population") || line.contains("how=population"),
    })
}

/// `2026-12-06T11:17:21.765618Z` (tracing's UTC timestamps) as Unix ns.
fn rfc3339_unix_ns(stamp: &str) -> Option<u64> {
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut ymd = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut parts = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (parts.next()??, parts.next()??, parts.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + min * 60 + s;
    let nanos: i64 = format!("{fraction:0<9}")[..9].parse().ok()?;
    u64::try_from(secs * 1_000_000_000 + nanos).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_stamps_read_as_unix_time() {
        assert_eq!(
            super::rfc3339_unix_ns("1970-01-01T00:00:01.5Z"),
            Some(1_500_000_000)
        );
        assert_eq!(
            super::rfc3339_unix_ns("2026-12-06T11:17:21.765618Z"),
            Some(1_796_555_841_765_618_000)
        );
    }
}
