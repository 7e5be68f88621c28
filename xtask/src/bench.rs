//! `cargo xtask bench`: the XDP per-path costs and UDP forwarding rate
//! (lb-user's benches), then requests per second and
//! p99 latency on one namespace topology through our LB, HAProxy (mode tcp,
//! roundrobin), nftables DNAT with numgen (kube-proxy style) and direct to
//! one backend, all measured in the same run. Not part of the test run.
use std::{fs, thread::sleep, time::Duration};

use anyhow::{Context, bail};
use lb_tests::{Bridge, Proc, Topology, cpu_time, median, registered, wait_for};

use crate::{cargo, root, setup};

mod churn;

const LB: usize = 0;
const BACKENDS: [usize; 3] = [1, 2, 3];
const CLIENT: usize = 4;
const WRK_SECONDS: &str = "5";
const WRK_CONNECTIONS: &str = "32";

struct Result {
    requests_per_sec: f64,
    p99_ms: f64,
}

/// How wrk's connections carry requests: many on one connection, or a new
/// TCP connection per request (the connection rate).
#[derive(Clone, Copy)]
enum Reuse {
    KeepAlive,
    NewConnection,
}

impl Reuse {
    const BOTH: [Reuse; 2] = [Reuse::KeepAlive, Reuse::NewConnection];

    fn wrk_args(self) -> &'static [&'static str] {
        match self {
            Reuse::KeepAlive => &[],
            Reuse::NewConnection => &["-H", "Connection: close"],
        }
    }

    fn title(self) -> &'static str {
        match self {
            Reuse::KeepAlive => "keep-alive HTTP/1.1",
            Reuse::NewConnection => "a new TCP connection per request (Connection: close)",
        }
    }
}

/// Parses wrk's `Requests/sec:` and the 99% line of `--latency`.
fn parse_wrk(output: &str) -> anyhow::Result<(f64, f64)> {
    let rps = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .context("no Requests/sec in wrk's output")?
        .trim()
        .parse::<f64>()?;
    let p99 = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .context("no 99% latency in wrk's output")?
        .trim();
    let (number, unit) = p99.split_at(
        p99.find(|c: char| c.is_alphabetic())
            .context("latency unit")?,
    );
    let scale = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        other => bail!("unknown latency unit {other:?}"),
    };
    Ok((rps, number.parse::<f64>()? * scale))
}

/// Rounds of each end-to-end table: every path once per round, in turn,
/// set up just before its turn and torn down after it, so that no path's
/// machinery runs during another's; each ratio is the median of the
/// rounds' ratios (direct's own rate moved by a fifth between runs here).
const ROUNDS: usize = 3;

/// A path's results, one per round.
struct Runs {
    name: &'static str,
    results: Vec<Result>,
}

/// A path in its turn: dropping it tears the path down.
enum Up {
    Nothing,
    /// A program that runs until killed.
    Program {
        _process: Proc,
    },
    /// An LB and its agents: the LB gets SIGTERM and detaches XDP (a killed
    /// LB would leave it attached, as designed, in every later path).
    Lb {
        lb: Proc,
        _agents: Vec<Proc>,
    },
    /// A change in a namespace, undone by running a program there.
    Undo {
        netns: String,
        undo: Vec<String>,
    },
}

impl Drop for Up {
    fn drop(&mut self) {
        match self {
            Up::Lb { lb, .. } => {
                lb.signal(libc::SIGTERM);
                if let Err(e) = lb.wait_exit(Duration::from_secs(10)) {
                    eprintln!("{e:#}");
                }
            }
            Up::Undo { netns, undo } => {
                let mut args = vec!["netns", "exec", netns.as_str()];
                args.extend(undo.iter().map(String::as_str));
                if let Err(e) = lb_tests::sh("ip", &args) {
                    eprintln!("{e:#}");
                }
            }
            Up::Nothing | Up::Program { .. } => {}
        }
    }
}

/// One way from a client to the servers: its name, and how to set it up
/// for a turn (returning its URL and what keeps it up).
struct Path<'a> {
    name: &'static str,
    start: Box<dyn Fn() -> anyhow::Result<(String, Up)> + 'a>,
}

/// `ROUNDS` rounds of wrk from host `client` through each of `paths` (the
/// first is the baseline), for each way of reusing connections in
/// `reuses`; prints each run, then one table per way.
fn rounds(
    topo: &Topology,
    client: usize,
    paths: &[Path<'_>],
    reuses: &[Reuse],
) -> anyhow::Result<()> {
    let mut tables: Vec<Vec<Runs>> = reuses
        .iter()
        .map(|_| {
            paths
                .iter()
                .map(|p| Runs {
                    name: p.name,
                    results: Vec::new(),
                })
                .collect()
        })
        .collect();
    for round in 1..=ROUNDS {
        println!("round {round} of {ROUNDS}");
        for (i, path) in paths.iter().enumerate() {
            let (url, _up) = (path.start)()?;
            for (reuse, table) in reuses.iter().zip(tables.iter_mut()) {
                table[i]
                    .results
                    .push(wrk_from(topo, client, path.name, &url, *reuse)?);
            }
        }
    }
    for (reuse, table) in reuses.iter().zip(&tables) {
        println!("\n{} (medians of {ROUNDS} rounds):", reuse.title());
        print_table(table);
    }
    Ok(())
}

/// Starts an LB on host `LB` serving `vip` and agents on `backends`, and
/// waits until every backend is registered.
fn lb_up(topo: &Topology, backends: &[usize], vip: &str, lb_args: &[&str]) -> anyhow::Result<Up> {
    lb_up_in(topo, backends, vip, (lb_args, &[]))
}

/// [`lb_up`] with arguments for both sides: the LB's and the agents' extra ones.
fn lb_up_in(
    topo: &Topology,
    backends: &[usize],
    vip: &str,
    (lb_args, agent_args): (&[&str], &[&str]),
) -> anyhow::Result<Up> {
    let mut args = lb_args.to_vec();
    args.extend(["--vip", vip, "--service", "tcp:80"]);
    let (lb, pin) = topo.start_lb(LB, "bench", &args)?;
    let mut agent = vec!["--iface", "eth0", "--vip", vip];
    agent.extend_from_slice(agent_args);
    let agents = topo.spawn_agents(backends, &agent)?;
    let up = Up::Lb {
        lb,
        _agents: agents,
    };
    wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        topo.status(&pin)
            .ok()
            .filter(|s| registered(s).len() == backends.len())
    })
    .context("backends did not register with the LB")?;
    sleep(Duration::from_millis(500));
    Ok(up)
}

/// wrk in host `client` against `url`.
fn wrk_from(
    topo: &Topology,
    client: usize,
    name: &'static str,
    url: &str,
    reuse: Reuse,
) -> anyhow::Result<Result> {
    let mut args = vec!["-t1", "-c", WRK_CONNECTIONS, "-d", WRK_SECONDS, "--latency"];
    args.extend(reuse.wrk_args());
    args.push(url);
    let out = topo.exec_program(client, "wrk", &args)?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Socket errors") {
        println!(
            "{name}: {}",
            text.lines()
                .find(|l| l.contains("Socket errors"))
                .unwrap_or_default()
        );
    }
    let (requests_per_sec, p99_ms) = parse_wrk(&text).with_context(|| format!("{name}: {text}"))?;
    println!("{name:<28} {requests_per_sec:>10.0} req/s   p99 {p99_ms:>7.2} ms");
    Ok(Result {
        requests_per_sec,
        p99_ms,
    })
}

/// A part of the bench, to run alone (`cargo xtask bench PART`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// The XDP per-path costs, UDP forwarding rate and Maglev builds.
    Xdp,
    /// Requests per second on one segment, against HAProxy, nftables and direct.
    EndToEnd,
    /// The same over IPv6 (an IPv6 VIP, IPv6 backends), against HAProxy and direct.
    EndToEnd6,
    /// Requests per second and 1 MB transfers through a router (IPIP).
    Routed,
    /// The control plane against swarms of backends.
    Scale,
    /// The control plane against swarms whose backends come and go.
    Churn,
}

pub fn bench(only: Option<Part>) -> anyhow::Result<()> {
    setup::setup()?;
    setup::apt_packages(&[("haproxy", "haproxy"), ("wrk", "wrk")])?;
    cargo(&["build", "--release", "--bins"], &[])?;
    let runs = |part| only.is_none_or(|o| o == part);
    let mut not_measured = Vec::new();
    if runs(Part::Xdp) {
        not_measured = xdp_paths();
    }
    // SAFETY: single-threaded at this point; lb_tests reads it when spawning.
    unsafe { std::env::set_var("XDP_LB_BIN_DIR", root().join("target/release")) };
    if runs(Part::EndToEnd) {
        Topology::new(5, Bridge::Snooping)?.run(end_to_end)?;
    }
    if runs(Part::EndToEnd6) {
        Topology::new(5, Bridge::Snooping)?.run(end_to_end6)?;
    }
    if runs(Part::Routed) {
        end_to_end_routed()?;
    }
    if runs(Part::Scale) {
        scale()?;
    }
    if runs(Part::Churn) {
        churn::churn()?;
    }
    if !not_measured.is_empty() {
        bail!(
            "not measured on this machine (see above): cargo bench -p lb-user --bench {}",
            not_measured.join(", ")
        );
    }
    Ok(())
}

/// Runs lb-user's benches one by one, so that one this machine cannot run
/// (it says why) does not keep the others from running; returns those.
fn xdp_paths() -> Vec<&'static str> {
    ["xdp_paths", "udp_pps", "maglev"]
        .into_iter()
        .filter(|bench| cargo(&["bench", "-p", "lb-user", "--bench", bench], &[]).is_err())
        .collect()
}

/// Swarm sizes of the control plane's scale table.
const SWARMS: [u32; 4] = [500, 5_000, 20_000, 65_536];

/// The control plane against swarms of backends (default timers: P = 1 s,
/// T = 2 s): registration time from the swarm's start, lb-user's CPU in
/// steady state, and the time of `status --json`.
fn scale() -> anyhow::Result<()> {
    println!("\ncontrol plane with N backends (swarm, default timers, release build)");
    println!(
        "| backends | all registered, after the query | lb-user CPU, steady state | status --json | all removed after falling silent ((N + 1) T = 22 s) |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for count in SWARMS {
        let topo = Topology::new(2, Bridge::Flooding)?;
        topo.run(|topo| scale_row(topo, count))?;
    }
    Ok(())
}

fn scale_row(topo: &Topology, count: u32) -> anyhow::Result<()> {
    let (lb, pin) = topo.start_lb(LB, "scale", &[])?;
    let [a, b, _, _] = topo.host(LB).addr.octets();
    let first = std::net::Ipv4Addr::new(a, b, 128, 1).to_string();
    let mut swarm = topo.spawn(1, "swarm", "swarm", &["eth0", &first, &count.to_string()])?;
    wait_for(Duration::from_secs(20), Duration::from_millis(20), || {
        topo.status(&pin)
            .ok()
            .filter(|s| registered(s).len() == count as usize)
    })
    .with_context(|| format!("{count} backends did not register"))?;
    let registered_ns = lb_host::system::realtime_ns();
    // From the first query the swarm answered (its first line says when).
    let log = swarm.log_text();
    let first_round: serde_json::Value =
        serde_json::from_str(log.lines().next().context("the swarm printed nothing")?)?;
    let query_ns = first_round["query_unix_ns"]
        .as_u64()
        .context("query_unix_ns")?;
    let registered_after = Duration::from_nanos(registered_ns.saturating_sub(query_ns));
    sleep(Duration::from_secs(2));
    let (cpu_before, steady) = (cpu_time(lb.pid())?, std::time::Instant::now());
    sleep(Duration::from_secs(10));
    let cpu = (cpu_time(lb.pid())? - cpu_before).as_secs_f64() / steady.elapsed().as_secs_f64();
    let status_start = std::time::Instant::now();
    let status = topo.status(&pin)?;
    let status_took = status_start.elapsed();
    anyhow::ensure!(
        registered(&status).len() == count as usize,
        "backends lost in steady state"
    );
    // All fall silent: removed after (N + 1) T = 22 s at the defaults.
    swarm.signal(libc::SIGKILL);
    swarm.wait_exit(Duration::from_secs(5))?;
    let silent = std::time::Instant::now();
    wait_for(Duration::from_secs(60), Duration::from_millis(50), || {
        topo.status(&pin).ok().filter(|s| registered(s).is_empty())
    })
    .with_context(|| format!("{count} silent backends were not removed"))?;
    println!(
        "| {count} | {:.2} s | {:.1}% of a core | {:.2} s | {:.1} s |",
        registered_after.as_secs_f64(),
        cpu * 100.0,
        status_took.as_secs_f64(),
        silent.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The routed topology: the LB and the client on one segment, a router
/// (multicast: `start_mrouter`) with a subnet per backend behind it.
const ROUTER: usize = 2;

/// Requests per second through IPIP (backends behind a router), next to
/// direct requests to one backend through the same router, then the time
/// of 1 MB each way by both paths; the client's offloads at their
/// defaults, so that its TSO super-packets reach the LB whole.
fn end_to_end_routed() -> anyhow::Result<()> {
    let mut topo = Topology::new(3, Bridge::Snooping)?;
    let mut backends = Vec::new();
    for subnet in 1..=3 {
        backends.extend(topo.add_subnet(ROUTER, subnet, 1)?);
    }
    topo.run(|topo| {
        // The client of the routed topology is host 1.
        topo.route_through(ROUTER, &[LB, 1])?;
        let _router = topo.start_mrouter(
            ROUTER,
            std::net::Ipv4Addr::new(239, 192, 0, 1),
            &["eth0", "s1", "s2", "s3"],
        )?;
        let vip = topo.segment_address(100).to_string();
        let _servers = topo.start_servers(&backends)?;
        println!("\nend to end through a router: backends on three subnets behind it");
        let first = topo.host(backends[0]).addr;
        let paths = [
            Path {
                name: "direct to one backend (routed)",
                start: Box::new(|| Ok((format!("http://{first}/"), Up::Nothing))),
            },
            Path {
                name: "xdp-lb (XDP, IPIP, DSR)",
                start: Box::new(|| {
                    let up = lb_up(topo, &backends, &vip, &["--ttl", "2"])?;
                    Ok((format!("http://{vip}/"), up))
                }),
            },
        ];
        rounds(topo, 1, &paths, &Reuse::BOTH)?;
        transfers(topo, 1, &paths)
    })
}

/// Rounds of the transfer table.
const TRANSFERS: usize = 3;

/// The median time of a 1 MB upload and of a 1 MB download by each of
/// `paths` from host `client` (`http-probe`), `TRANSFERS` of each.
fn transfers(topo: &Topology, client: usize, paths: &[Path<'_>]) -> anyhow::Result<()> {
    println!(
        "
1 MB through each path (medians of {TRANSFERS}):"
    );
    println!("| path | upload | download |");
    println!("|---|---:|---:|");
    for path in paths {
        let (url, _up) = (path.start)()?;
        let target = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned()
            + ":80";
        let mut times = [Vec::new(), Vec::new()];
        for _ in 0..TRANSFERS {
            for (mode, samples) in ["upload", "download"].iter().zip(times.iter_mut()) {
                let out = topo.exec(client, "http-probe", &[mode, &target, "1048576"])?;
                let text = String::from_utf8_lossy(&out.stdout);
                let line: serde_json::Value =
                    serde_json::from_str(text.lines().last().unwrap_or("{}"))?;
                if !line["error"].is_null() {
                    println!("{}: {mode} failed: {line}", path.name);
                    samples.push(f64::INFINITY);
                    continue;
                }
                samples.push(line["ms"].as_f64().context("http-probe printed no time")?);
            }
        }
        let [up, down] = times.map(|t| {
            let m = median(t);
            if m.is_finite() {
                format!("{m:.0} ms")
            } else {
                "failed".to_owned()
            }
        });
        println!("| {} | {up} | {down} |", path.name);
    }
    Ok(())
}

fn end_to_end(topo: &Topology) -> anyhow::Result<()> {
    let lb = topo.host(LB).addr;
    let vip = topo.segment_address(100).to_string();
    let backend_addrs: Vec<String> = BACKENDS
        .iter()
        .map(|&h| topo.host(h).addr.to_string())
        .collect();
    let _servers = topo.start_servers(&BACKENDS)?;
    // A new connection per request leaves tens of thousands in TIME_WAIT
    // on the client (and on the proxies' side toward the backends): let
    // them reuse ports, from a wide range.
    for host in [CLIENT, LB] {
        topo.sysctl(host, "net.ipv4.tcp_tw_reuse", "1")?;
        topo.sysctl(host, "net.ipv4.ip_local_port_range", "1024 65535")?;
    }
    topo.sysctl(LB, "net.ipv4.ip_forward", "1")?;
    // Forwarding within the segment, the LB host would redirect the client.
    for iface in ["all", "eth0"] {
        topo.sysctl(LB, &format!("net.ipv4.conf.{iface}.send_redirects"), "0")?;
    }
    sleep(Duration::from_millis(300));
    println!(
        "\nend to end: wrk -t1 -c{WRK_CONNECTIONS} -d{WRK_SECONDS}s, 3 backends, keep-alive and a new connection per request"
    );
    let logs = &topo.logs;
    let paths = [
        Path {
            name: "direct to one backend",
            start: Box::new(|| Ok((format!("http://{}/", backend_addrs[0]), Up::Nothing))),
        },
        // The LB host's hop alone: the client reaches that backend through
        // the LB host, which the kernel forwards (no LB), and the backend
        // answers directly, as with direct server return.
        Path {
            name: "direct via the LB host (kernel forwarding)",
            start: Box::new(|| {
                let prefix = format!("{}/32", backend_addrs[0]);
                topo.add_route(CLIENT, &prefix, lb)?;
                let up = Up::Undo {
                    netns: topo.host(CLIENT).netns.clone(),
                    undo: ["ip", "route", "del", &prefix].map(String::from).to_vec(),
                };
                Ok((format!("http://{}/", backend_addrs[0]), up))
            }),
        },
        // Our LB: XDP with direct server return.
        Path {
            name: "xdp-lb (XDP, DSR)",
            start: Box::new(|| {
                let up = lb_up(topo, &BACKENDS, &vip, &[])?;
                Ok((format!("http://{vip}/"), up))
            }),
        },
        // HAProxy in the LB's namespace: a full proxy.
        Path {
            name: "HAProxy (mode tcp)",
            start: Box::new(|| {
                let path = logs.join("haproxy.cfg");
                fs::write(&path, haproxy_config(&lb.to_string(), &backend_addrs))?;
                let haproxy = topo.spawn_program(
                    LB,
                    "haproxy",
                    "haproxy",
                    &["-db", "-f", path.to_str().context("path")?],
                )?;
                sleep(Duration::from_millis(500));
                Ok((
                    format!("http://{lb}:8080/"),
                    Up::Program { _process: haproxy },
                ))
            }),
        },
        // nftables DNAT with numgen and masquerade, as kube-proxy does.
        Path {
            name: "nftables DNAT (numgen)",
            start: Box::new(|| {
                let path = logs.join("nat.nft");
                fs::write(&path, nft_rules(lb, &backend_addrs))?;
                topo.exec_program(LB, "nft", &["-f", path.to_str().context("path")?])?;
                let up = Up::Undo {
                    netns: topo.host(LB).netns.clone(),
                    undo: ["nft", "delete", "table", "ip", NFT_TABLE]
                        .map(String::from)
                        .to_vec(),
                };
                Ok((format!("http://{lb}/"), up))
            }),
        },
    ];
    rounds(topo, CLIENT, &paths, &Reuse::BOTH)
}

/// The end-to-end rows over IPv6 (protocol §9): an IPv6 VIP served by
/// IPv6 backends at layer 2, against direct to one backend and HAProxy,
/// every host given a global IPv6 address.
fn end_to_end6(topo: &Topology) -> anyhow::Result<()> {
    const GROUP6: &str = "ff15::4c42";
    for i in 0..5 {
        topo.ipv6(i)?;
    }
    let lb = topo.ipv6_address(LB);
    let [a, b, c, ..] = lb.segments();
    let vip = std::net::Ipv6Addr::new(a, b, c, 0, 0, 0, 0, 0x100).to_string();
    let backend_addrs: Vec<String> = BACKENDS
        .iter()
        .map(|&h| format!("[{}]", topo.ipv6_address(h)))
        .collect();
    // Both families: the name server on [::]:80.
    let _servers = BACKENDS
        .iter()
        .map(|&h| {
            topo.spawn(
                h,
                &format!("server{h}"),
                "name-server",
                &["[::]:80", &format!("b{h}")],
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for host in [CLIENT, LB] {
        topo.sysctl(host, "net.ipv4.tcp_tw_reuse", "1")?;
        topo.sysctl(host, "net.ipv4.ip_local_port_range", "1024 65535")?;
    }
    sleep(Duration::from_millis(300));
    println!(
        "\nend to end over IPv6: wrk -t1 -c{WRK_CONNECTIONS} -d{WRK_SECONDS}s, 3 IPv6 backends, keep-alive and a new connection per request"
    );
    let logs = &topo.logs;
    let paths = [
        Path {
            name: "direct to one backend (IPv6)",
            start: Box::new(|| Ok((format!("http://{}/", backend_addrs[0]), Up::Nothing))),
        },
        Path {
            name: "xdp-lb (XDP, DSR, IPv6 VIP)",
            start: Box::new(|| {
                let up = lb_up_in(
                    topo,
                    &BACKENDS,
                    &vip,
                    (&["--group", GROUP6], &["--group", GROUP6]),
                )?;
                Ok((format!("http://[{vip}]/"), up))
            }),
        },
        Path {
            name: "HAProxy (mode tcp, IPv6)",
            start: Box::new(|| {
                let path = logs.join("haproxy6.cfg");
                fs::write(&path, haproxy_config(&format!("[{lb}]"), &backend_addrs))?;
                let haproxy = topo.spawn_program(
                    LB,
                    "haproxy6",
                    "haproxy",
                    &["-db", "-f", path.to_str().context("path")?],
                )?;
                sleep(Duration::from_millis(500));
                Ok((
                    format!("http://[{lb}]:8080/"),
                    Up::Program { _process: haproxy },
                ))
            }),
        },
    ];
    rounds(topo, CLIENT, &paths, &Reuse::BOTH)
}

/// HAProxy in TCP mode on `lb`:8080 (an address as HAProxy writes it:
/// IPv6 in brackets), round robin over `backends` (likewise) port 80.
fn haproxy_config(lb: &str, backends: &[String]) -> String {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, a)| format!("    server b{i} {a}:80\n"))
        .collect();
    format!(
        "global\n    maxconn 4096\ndefaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
         frontend bench\n    bind {lb}:8080\n    default_backend backends\nbackend backends\n    balance roundrobin\n{servers}"
    )
}

/// The nftables table of the DNAT path.
const NFT_TABLE: &str = "xlbbench";

fn nft_rules(lb: std::net::Ipv4Addr, backends: &[String]) -> String {
    let map: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{i} : {a}"))
        .collect();
    format!(
        "table ip {NFT_TABLE} {{\n  chain pre {{ type nat hook prerouting priority -100; ip daddr {lb} tcp dport 80 dnat to numgen inc mod {n} map {{ {map} }}; }}\n  chain post {{ type nat hook postrouting priority 100; ip daddr {{ {addrs} }} tcp dport 80 masquerade; }}\n}}\n",
        n = backends.len(),
        map = map.join(", "),
        addrs = backends.join(", ")
    )
}

/// The results as a Markdown table, each path against the first (direct):
/// medians of the rounds' rates, p99 latencies and ratios.
fn print_table(paths: &[Runs]) {
    let baseline = &paths[0].results;
    println!("\n| path | requests/s | p99 latency | vs direct |\n|---|---:|---:|---:|");
    for path in paths {
        let ratios = path
            .results
            .iter()
            .zip(baseline)
            .map(|(r, b)| r.requests_per_sec / b.requests_per_sec)
            .collect();
        let rates = path.results.iter().map(|r| r.requests_per_sec).collect();
        let p99s = path.results.iter().map(|r| r.p99_ms).collect();
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} |",
            path.name,
            median(rates),
            median(p99s),
            median(ratios)
        );
    }
}
