//! The `/metrics` endpoint of `--metrics ADDR:PORT` (lb-user and
//! backend-agent): a small HTTP/1.1 server on a thread of its own, so a
//! scrape never waits for the control loop nor the loop for a scrape. The
//! exposition itself is rendered by the caller (with prometheus-client).
use std::{
    io::{self, BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::atomic::AtomicU64,
    time::Duration,
};

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

/// OpenMetrics text, as prometheus-client encodes it: for scrapers that
/// ask for it (Prometheus does).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format (0.0.4): for everyone else (curl, promtool).
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// A client that sends nothing for this long is dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The bound listener: binding happens at start, so that a port in use or
/// a bad address is one clear error before anything else starts.
pub struct MetricsEndpoint {
    listener: TcpListener,
}

impl MetricsEndpoint {
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr)?,
        })
    }

    /// The endpoint of a `--metrics` flag, if given; the error names the flag.
    pub fn bind_flag(addr: Option<SocketAddr>) -> anyhow::Result<Option<Self>> {
        addr.map(|addr| {
            Self::bind(addr)
                .map_err(|e| anyhow::anyhow!("binding the metrics endpoint --metrics {addr}: {e}"))
        })
        .transpose()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `GET /metrics` with what `render` returns, on a thread of its
    /// own, for as long as the process lives.
    pub fn serve(self, render: impl Fn() -> Result<String, String> + Send + 'static) {
        std::thread::spawn(move || {
            for stream in self.listener.incoming().flatten() {
                // One client at a time: scrapes are rare, and a failed one
                // only costs that scrape.
                let _ = answer(stream, &render);
            }
        });
    }
}

fn answer(mut stream: TcpStream, render: &impl Fn() -> Result<String, String>) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Of the rest of the head, only Accept matters.
    let mut openmetrics = false;
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        let lower = line.to_ascii_lowercase();
        openmetrics |=
            lower.starts_with("accept:") && lower.contains("application/openmetrics-text");
        line.clear();
    }
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let rendered = (path == "/metrics").then(render);
    let (status, content_type, body) = match rendered {
        Some(Ok(text)) if openmetrics => ("200 OK", OPENMETRICS, text),
        Some(Ok(text)) => ("200 OK", PROMETHEUS_TEXT, prometheus_text(&text)),
        Some(Err(e)) => ("500 Internal Server Error", "text/plain", format!("{e}\n")),
        None => (
            "404 Not Found",
            "text/plain",
            "metrics are at /metrics\n".to_owned(),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// OpenMetrics text as the Prometheus text format: a counter family's HELP
/// and TYPE name its samples' `_total` name, and there is no `# EOF`.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Registers the `process_*` metrics of this process (cpu seconds,
/// resident memory, open fds, start time), read from /proc now: the
/// basics every exporter shows. Nothing is registered if /proc cannot be read.
pub fn register_process_metrics(registry: &mut Registry) {
    let Some(basics) = process_basics() else {
        return;
    };
    let cpu = Counter::<f64, AtomicU64>::default();
    cpu.inc_by(basics.cpu_seconds);
    registry.register("process_cpu_seconds", "User and system CPU time spent", cpu);
    for (name, help, value) in [
        (
            "process_resident_memory_bytes",
            "Resident memory size",
            basics.resident_bytes,
        ),
        (
            "process_start_time_seconds",
            "Start time since the Unix epoch",
            basics.start_time_seconds,
        ),
        ("process_open_fds", "Open file descriptors", basics.open_fds),
    ] {
        let gauge = Gauge::<f64, AtomicU64>::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    }
}

/// What `register_process_metrics` reads.
struct ProcessBasics {
    cpu_seconds: f64,
    resident_bytes: f64,
    start_time_seconds: f64,
    open_fds: f64,
}

fn process_basics() -> Option<ProcessBasics> {
    let fields = crate::system::proc_stat("self")?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
    let rss = fields.get(21)?.parse::<f64>().ok()? * page;
    let started_ticks = fields.get(19)?.parse::<f64>().ok()?;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse::<f64>()
        .ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
    Some(ProcessBasics {
        cpu_seconds: crate::system::cpu_time("self")?.as_secs_f64(),
        resident_bytes: rss,
        start_time_seconds: boot + started_ticks / crate::system::clock_ticks(),
        open_fds,
    })
}

/// The metric families of `exposition` (the names of its `# TYPE` lines)
/// that `page` does not name as `` `family ``: a counter's family is
/// listed with its `_total` sample name, which starts so. The binaries'
/// tests keep docs/operations.md complete with it.
pub fn families_missing_from<'a>(exposition: &'a str, page: &str) -> Vec<&'a str> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next())
        .filter(|name| !page.contains(&format!("`{name}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_names_in_the_prometheus_text_format() {
        let openmetrics = "# HELP requests Requests.\n# TYPE requests counter\nrequests_total 3\n\
                           # HELP up Up.\n# TYPE up gauge\nup 1\n# EOF\n";
        assert_eq!(
            prometheus_text(openmetrics),
            "# HELP requests_total Requests.\n# TYPE requests_total counter\nrequests_total 3\n\
             # HELP up Up.\n# TYPE up gauge\nup 1\n"
        );
    }
}
