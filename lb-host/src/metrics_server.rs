//! The `/metrics` endpoint of `--metrics ADDR:PORT` (lb-user and
//! backend-agent), served with hyper on a runtime of its own thread, so a
//! scrape never waits for the control loop nor the loop for a scrape, and
//! one slow client never holds up another. The exposition itself is
//! rendered by the caller (with prometheus-client).
use std::{
    convert::Infallible,
    io,
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};
use tracing::error;

/// OpenMetrics text, as prometheus-client encodes it: for scrapers that
/// ask for it (Prometheus does).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format (0.0.4): for everyone else (curl, promtool).
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// A client that has not sent a whole request head for this long is
/// dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The style and the script both status pages load.
const PAGE_CSS: &str = include_str!("page.css");
const PAGE_JS: &str = include_str!("page.js");

/// What renders a document; one render at a time.
type Render = Arc<Mutex<dyn FnMut() -> Result<String, String> + Send>>;

/// A status page beside `/metrics`: `html` at `/`, which reads what `json`
/// renders at `/status.json`.
pub struct StatusPage {
    pub html: &'static str,
    pub json: Box<dyn FnMut() -> Result<String, String> + Send>,
}

/// What one endpoint serves.
#[derive(Clone)]
struct Routes {
    metrics: Render,
    page: Option<(&'static str, Render)>,
}

/// The bound listener: binding happens at start, so that a port in use or
/// a bad address is one clear error before anything else starts.
pub struct MetricsEndpoint {
    listener: TcpListener,
}

impl MetricsEndpoint {
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(Self { listener })
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

    /// Serves `GET /metrics` with what `render` returns and, with a
    /// `page`, the status page at `/` and its `/status.json`, on a thread
    /// of its own, for as long as the process lives.
    pub fn serve(
        self,
        render: impl FnMut() -> Result<String, String> + Send + 'static,
        page: Option<StatusPage>,
    ) {
        let routes = Routes {
            metrics: Arc::new(Mutex::new(render)),
            page: page.map(|p| {
                let json: Render = Arc::new(Mutex::new(p.json));
                (p.html, json)
            }),
        };
        std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => return error!("metrics endpoint: no runtime: {e}"),
            };
            runtime.block_on(accept(self.listener, routes));
        });
    }
}

/// Accepts connections for ever, each served by a task of its own.
async fn accept(listener: TcpListener, routes: Routes) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => return error!("metrics endpoint: {e}"),
    };
    loop {
        // A failed accept (out of descriptors, say) costs that client only.
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let routes = routes.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(request, routes.clone()));
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(CLIENT_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `GET /metrics`: the exposition, in the format the client asks for;
/// with a status page, `GET /` and `GET /status.json`; anything else on
/// those paths: 405; any other path: 404.
async fn respond(
    request: Request<Incoming>,
    routes: Routes,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let page_paths = ["/", "/status.json", "/page.css", "/page.js"];
    let known = path == "/metrics" || (routes.page.is_some() && page_paths.contains(&path));
    if !known {
        let paths = if routes.page.is_some() {
            "/, /status.json and /metrics"
        } else {
            "/metrics"
        };
        return Ok(plain(
            StatusCode::NOT_FOUND,
            &format!("this endpoint serves {paths}\n"),
        ));
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    Ok(match (path, &routes.page) {
        ("/", Some((html, _))) => {
            with_type(Response::new(Full::from(*html)), "text/html; charset=utf-8")
        }
        ("/page.css", Some(_)) => with_type(
            Response::new(Full::from(PAGE_CSS)),
            "text/css; charset=utf-8",
        ),
        ("/page.js", Some(_)) => with_type(
            Response::new(Full::from(PAGE_JS)),
            "text/javascript; charset=utf-8",
        ),
        ("/status.json", Some((_, json))) => match rendered(json.clone()).await {
            Ok(text) => with_type(Response::new(Full::from(text)), "application/json"),
            Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        },
        _ => {
            let openmetrics = request.headers().get_all(header::ACCEPT).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.contains("application/openmetrics-text"))
            });
            match rendered(routes.metrics).await {
                Ok(text) if openmetrics => with_type(Response::new(Full::from(text)), OPENMETRICS),
                Ok(text) => with_type(
                    Response::new(Full::from(prometheus_text(&text))),
                    PROMETHEUS_TEXT,
                ),
                Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
            }
        }
    })
}

/// What `render` returns, rendered off the runtime (it reads maps), one
/// render at a time.
async fn rendered(render: Render) -> Result<String, String> {
    tokio::task::spawn_blocking(move || match render.lock() {
        Ok(mut render) => render(),
        Err(_) => Err("an earlier render panicked".to_owned()),
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()))
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = with_type(Response::new(Full::from(text.to_owned())), "text/plain");
    *response.status_mut() = status;
    response
}

fn with_type(
    mut response: Response<Full<Bytes>>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
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

/// The metric names in `queries` (PromQL in a dashboard or rule file:
/// every word starting with one of `prefixes`) whose family `exposition`
/// does not export: a histogram's `_bucket`, `_sum` and `_count` and a
/// counter's `_total` samples belong to their family.
pub fn names_not_exported<'a>(
    queries: &'a str,
    prefixes: &[&str],
    exposition: &str,
) -> Vec<&'a str> {
    let families: std::collections::HashSet<&str> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next())
        .collect();
    let mut missing: Vec<&str> = queries
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| prefixes.iter().any(|p| word.starts_with(p)))
        .filter(|word| {
            let family = ["_bucket", "_sum", "_count", "_total"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word);
            !families.contains(family) && !families.contains(word)
        })
        .collect();
    missing.sort_unstable();
    missing.dedup();
    missing
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

    /// The whole answer to `request` sent to `addr`.
    fn ask(addr: SocketAddr, request: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    #[test]
    fn get_metrics_is_served_beside_a_stalled_client_and_the_rest_is_refused() {
        let endpoint = MetricsEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        endpoint.serve(|| Ok("# TYPE up gauge\nup 1\n# EOF\n".to_owned()), None);
        let mut stalled = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut stalled, b"GET /metr").unwrap();
        let started = std::time::Instant::now();
        let answer = ask(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "held up by the stalled client"
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains("version=0.0.4") && answer.ends_with("up 1\n"),
            "{answer}"
        );
        let open = ask(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\n\r\n",
        );
        assert!(
            open.contains("openmetrics-text") && open.ends_with("# EOF\n"),
            "{open}"
        );
        let post = ask(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(
            post.starts_with("HTTP/1.1 405") && post.contains("allow: GET"),
            "{post}"
        );
        let elsewhere = ask(addr, "GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(elsewhere.starts_with("HTTP/1.1 404"), "{elsewhere}");
        let garbage = ask(addr, "\x16\x03\x01 not http\r\n\r\n");
        assert!(
            garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"),
            "{garbage}"
        );
    }

    #[test]
    fn a_query_of_a_family_not_exported_is_named() {
        let exposition = "# TYPE xdp_lb_up gauge\nxdp_lb_up 1\n# TYPE xdp_lb_hits counter\n\
                          xdp_lb_hits_total 2\n# TYPE xdp_lb_wait histogram\nxdp_lb_wait_bucket{le=\"1\"} 1\n";
        let queries = "xdp_lb_up == 0 and rate(xdp_lb_hits_total[1m]) > 0 \
                       or histogram_quantile(0.9, xdp_lb_wait_bucket) or xdp_lb_gone{a=\"xdp_lb_x\"}";
        assert_eq!(
            names_not_exported(queries, &["xdp_lb_"], exposition),
            vec!["xdp_lb_gone", "xdp_lb_x"]
        );
    }
}
