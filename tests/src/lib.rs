//! Helpers for the network-namespace integration tests: a bridge with hosts
//! on it, processes of the project's binaries inside them, and status reads.
//! Everything a test builds is torn down by `Drop`, on success and failure.
use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
pub use lb_common::{Counter, GsoCounter};
pub use lb_host::status::{GroupReport, StatusReport};

pub mod fd_store;
pub mod routed;

/// Raw IPv4 sending for the test tools that forge packets (`flood`,
/// `forge-leave`): they write whole IP headers, spoofed sources included.
pub mod raw {
    use std::{
        io,
        mem::size_of,
        net::Ipv4Addr,
        os::fd::{AsRawFd, FromRawFd, OwnedFd},
    };

    /// An IPPROTO_RAW socket: every packet sent carries its own IP header.
    pub fn socket() -> io::Result<OwnedFd> {
        // SAFETY: plain socket creation; the fd is owned at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh socket nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Sends `packet` (IP header included) towards `to`.
    pub fn send(socket: &OwnedFd, packet: &[u8], to: Ipv4Addr) -> io::Result<()> {
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(to).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: the buffer and address are valid for the call.
        let rc = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Topologies are built one at a time: timing assertions need the CPUs.
static SERIAL: Mutex<()> = Mutex::new(());
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Directory holding the project's binaries: `XDP_LB_BIN_DIR` (absolute,
/// or relative to the workspace root), or the
/// profile directory of the running test executable.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDP_LB_BIN_DIR") {
        // Relative to the workspace root, wherever the test runs from.
        return Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build --bins`, or run `./xtask.sh test`)",
        path.display()
    );
    path
}

/// Runs a command to completion, failing with its stderr if it fails.
pub fn sh(program: &str, args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// CPU time (user + system) a process has used, from /proc.
pub fn cpu_time(pid: i32) -> anyhow::Result<Duration> {
    lb_host::system::cpu_time(&pid.to_string()).with_context(|| format!("reading /proc/{pid}/stat"))
}

/// The middle value of `samples` (the upper one of an even count): the
/// benchmarks' statistic.
pub fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Polls `probe` every `every` until it yields a value or `limit` passes.
pub fn wait_for<T>(
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if start.elapsed() >= limit {
            return None;
        }
        thread::sleep(every);
    }
}

/// One host: a network namespace with `eth0` on the bridge.
pub struct Host {
    pub netns: String,
    pub addr: Ipv4Addr,
}

/// A process started by a test; killed on drop if still running.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory preconditions; the pid is our child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits (bounded) for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<i32> {
        let status = wait_for(limit, Duration::from_millis(10), || {
            self.child.try_wait().ok().flatten()
        })
        .with_context(|| format!("{} did not exit within {limit:?}", self.name))?;
        Ok(status.code().unwrap_or(-1))
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How the bridge treats multicast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bridge {
    /// No IGMP snooping: multicast floods every port.
    Flooding,
    /// IGMP snooping, the Linux default: reports go to router ports.
    Snooping,
    /// Snooping with the bridge's own IGMPv3 querier, as data-centre
    /// switches run it; general queries every `query_interval_cs`
    /// centiseconds.
    SnoopingQuerier { query_interval_cs: u32 },
}

/// A bridge in its own namespace with `hosts` hosts attached.
pub struct Topology {
    pub prefix: String,
    pub bridge_ns: String,
    pub hosts: Vec<Host>,
    /// A bpffs mounted for this topology: `ip netns exec` hides /sys/fs/bpf.
    pub bpffs: PathBuf,
    pub logs: PathBuf,
    _serial: MutexGuard<'static, ()>,
}

impl Topology {
    /// Builds the bridge and hosts `10.<net>.0.1..=hosts`.
    pub fn new(hosts: u8, bridge: Bridge) -> anyhow::Result<Self> {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("xlb{}-{id}", std::process::id());
        let base = PathBuf::from("/run/xdp-lb-tests").join(&prefix);
        let mut topo = Topology {
            bridge_ns: format!("{prefix}-br"),
            prefix,
            hosts: Vec::new(),
            bpffs: base.join("bpf"),
            logs: base.join("logs"),
            _serial: serial,
        };
        // From here on, Drop cleans up whatever was built.
        topo.build(hosts, bridge, id)?;
        Ok(topo)
    }

    fn build(&mut self, hosts: u8, bridge: Bridge, id: u32) -> anyhow::Result<()> {
        fs::create_dir_all(&self.bpffs)?;
        fs::create_dir_all(&self.logs)?;
        let bpffs = self.bpffs.to_str().context("path")?.to_owned();
        sh("mount", &["-t", "bpf", "bpf", &bpffs])?;
        let br = self.bridge_ns.clone();
        sh("ip", &["netns", "add", &br])?;
        let mut add = vec!["-n", &br, "link", "add", "br0", "type", "bridge"];
        let interval;
        match bridge {
            Bridge::Flooding => add.extend(["mcast_snooping", "0"]),
            Bridge::Snooping => add.extend(["mcast_snooping", "1"]),
            Bridge::SnoopingQuerier { query_interval_cs } => {
                interval = query_interval_cs.to_string();
                add.extend([
                    "mcast_snooping",
                    "1",
                    "mcast_querier",
                    "1",
                    "mcast_query_interval",
                    &interval,
                    // Hosts that hear an IGMPv2 general query fall back to
                    // IGMPv2 and rarely report leaving (protocol §4.1).
                    "mcast_igmp_version",
                    "3",
                ]);
            }
        }
        sh("ip", &add)?;
        sh("ip", &["-n", &br, "link", "set", "br0", "up"])?;
        // A /24 per topology keeps concurrent runs apart even in captures.
        let net = 100 + (id % 100) as u8;
        for i in 1..=hosts {
            let netns = format!("{}-h{i}", self.prefix);
            let addr = Ipv4Addr::new(10, net, 0, i);
            self.add_host(netns, (&br, "br0", &format!("p{i}")), addr)?;
        }
        Ok(())
    }

    /// Creates host namespace `netns` with `eth0` at `addr`/24, whose veth
    /// peer (namespace, bridge, port name) is a port of that bridge.
    /// Returns the host's index.
    fn add_host(
        &mut self,
        netns: String,
        (peer_ns, bridge, port): (&str, &str, &str),
        addr: Ipv4Addr,
    ) -> anyhow::Result<usize> {
        sh("ip", &["netns", "add", &netns])?;
        sh(
            "ip",
            &[
                "-n", &netns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns",
                peer_ns,
            ],
        )?;
        sh(
            "ip",
            &["-n", peer_ns, "link", "set", port, "master", bridge, "up"],
        )?;
        let cidr = format!("{addr}/24");
        sh("ip", &["-n", &netns, "addr", "add", &cidr, "dev", "eth0"])?;
        sh("ip", &["-n", &netns, "link", "set", "eth0", "up"])?;
        sh("ip", &["-n", &netns, "link", "set", "lo", "up"])?;
        self.hosts.push(Host { netns, addr });
        Ok(self.hosts.len() - 1)
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// An address on the hosts' /24 that no host has (hosts end in 1..=N):
    /// for VIPs and moved addresses.
    pub fn segment_address(&self, last: u8) -> Ipv4Addr {
        assert!(
            usize::from(last) > self.hosts.len(),
            "{last} is a host's address"
        );
        let o = self.hosts[0].addr.octets();
        Ipv4Addr::new(o[0], o[1], o[2], last)
    }

    /// Starts one of the project's binaries in host `i`.
    pub fn spawn(&self, i: usize, name: &str, binary: &str, args: &[&str]) -> anyhow::Result<Proc> {
        self.spawn_program(i, name, bin(binary).to_str().context("binary path")?, args)
    }

    /// Starts `backend-agent` with `args` on each of `hosts`, named `agent<host>`.
    pub fn spawn_agents(&self, hosts: &[usize], args: &[&str]) -> anyhow::Result<Vec<Proc>> {
        hosts
            .iter()
            .map(|&h| self.spawn(h, &format!("agent{h}"), "backend-agent", args))
            .collect()
    }

    /// Starts the test HTTP server (`name-server`) on port 80 of each of
    /// `hosts`, each answering with its name, `b<host>`.
    pub fn start_servers(&self, hosts: &[usize]) -> anyhow::Result<Vec<Proc>> {
        hosts
            .iter()
            .map(|&h| {
                self.spawn(
                    h,
                    &format!("server{h}"),
                    "name-server",
                    &["0.0.0.0:80", &format!("b{h}")],
                )
            })
            .collect()
    }

    /// Starts any program (from PATH or a path) in host `i`, logging to a file.
    pub fn spawn_program(
        &self,
        i: usize,
        name: &str,
        program: &str,
        args: &[&str],
    ) -> anyhow::Result<Proc> {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.hosts[i].netns])
            .arg(program)
            .args(args);
        self.spawn_command(i, name, program, command)
    }

    /// Starts `binary` with `args` in host `i` as a service of `store`
    /// would be: with `NOTIFY_SOCKET`, and what the store holds passed as
    /// sd_listen_fds(3) describes.
    pub fn spawn_managed(
        &self,
        i: usize,
        name: &str,
        binary: &str,
        args: &[&str],
        store: &mut fd_store::FdStore,
    ) -> anyhow::Result<Proc> {
        let passing = store.pass()?;
        let program = bin(binary);
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                &self.hosts[i].netns,
                "bash",
                "-c",
                &passing.script,
            ])
            .arg(&program)
            .args(args)
            .envs(passing.env.iter().map(|(k, v)| (k, v)));
        let fds = passing.fds;
        // SAFETY: the closure only calls dup2 and fcntl (async-signal-safe).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                fd_store::stage_in_child(&fds)
            });
        }
        self.spawn_command(i, name, binary, command)
    }

    fn spawn_command(
        &self,
        i: usize,
        name: &str,
        program: &str,
        mut command: Command,
    ) -> anyhow::Result<Proc> {
        let log = self.logs.join(format!("{name}.log"));
        let file = fs::File::create(&log)?;
        let child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {program} in {}", self.hosts[i].netns))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// The status of the instance at `pin_path` once it has configured its
    /// groups (its maps are pinned, and answer, a moment before).
    pub fn configured_status(&self, pin_path: &Path) -> Option<StatusReport> {
        self.status(pin_path).ok().filter(|s| !s.groups.is_empty())
    }

    /// Pin path of an LB instance named `name`.
    pub fn pin_path(&self, name: &str) -> PathBuf {
        self.bpffs.join(name)
    }

    /// `lb-user status --json` of the instance pinned at `pin_path`, read
    /// into the type that printed it.
    pub fn status(&self, pin_path: &Path) -> anyhow::Result<StatusReport> {
        let out = sh(
            bin("lb-user").to_str().context("path")?,
            &[
                "status",
                "--json",
                "--pin-path",
                pin_path.to_str().context("path")?,
            ],
        )?;
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Waits until every service of the instance at `pin_path` has a table
    /// naming exactly the active backends of its group: the control pass
    /// after a registration, a leave or a change of state has rebuilt it.
    /// Returns how long that took.
    pub fn wait_tables(&self, pin_path: &Path) -> anyhow::Result<Duration> {
        self.wait_tables_without(pin_path, &[])
    }

    /// The same, for tables that never name the active backends
    /// `unreachable` (routed ones, with `--forwarding l2`).
    pub fn wait_tables_without(
        &self,
        pin_path: &Path,
        unreachable: &[Ipv4Addr],
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
            self.status(pin_path)
                .ok()
                .filter(|s| tables_name_the_active_backends(s, unreachable))
        })
        .with_context(|| {
            format!(
                "the tables at {} did not come to name the active backends: {:?}",
                pin_path.display(),
                self.status(pin_path).map(|s| s.services)
            )
        })?;
        Ok(start.elapsed())
    }
}

/// Whether every service's table names exactly its group's active
/// backends but `unreachable` (and there is a service).
pub fn tables_name_the_active_backends(status: &StatusReport, unreachable: &[Ipv4Addr]) -> bool {
    let active = |group: Ipv4Addr| {
        let mut addrs: Vec<Ipv4Addr> = status
            .groups
            .iter()
            .filter(|g| g.group == group)
            .flat_map(|g| &g.backends)
            .filter(|b| b.state == "active" && !unreachable.contains(&b.address))
            .map(|b| b.address)
            .collect();
        addrs.sort();
        addrs
    };
    !status.services.is_empty()
        && status
            .services
            .iter()
            .all(|s| s.table_backends == active(s.group))
}

/// The backend a `http-probe hold` answered from first (its `first NAME`
/// line), once it has.
pub fn first_answer(hold: &Proc) -> anyhow::Result<String> {
    wait_for(Duration::from_secs(3), Duration::from_millis(20), || {
        hold.log_text()
            .lines()
            .find_map(|l| l.strip_prefix("first ").map(str::to_owned))
    })
    .with_context(|| format!("{}: no answer: {}", hold.name, hold.log_text()))
}

/// The fast protocol timers the tests run with: P = 200 ms, max response
/// 100 ms, T = 400 ms, N = 3.
pub const FAST_TIMERS: [&str; 8] = [
    "--query-interval",
    "200ms",
    "--max-response-time",
    "100ms",
    "--timeout",
    "400ms",
    "--max-misses",
    "3",
];

impl Topology {
    /// Starts `lb-user run --iface eth0` with `extra` arguments on host `i`,
    /// its maps pinned under this topology's bpffs as `name`; returns once
    /// its status answers.
    pub fn start_lb(
        &self,
        i: usize,
        name: &str,
        extra: &[&str],
    ) -> anyhow::Result<(Proc, PathBuf)> {
        let pin = self.pin_path(name);
        let pin_str = pin.to_str().context("pin path")?.to_owned();
        let mut args = vec!["run", "--iface", "eth0", "--pin-path", &pin_str];
        args.extend_from_slice(extra);
        let lb = self.spawn(i, name, "lb-user", &args)?;
        wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
            self.configured_status(&pin)
        })
        .with_context(|| format!("{name} did not come up: {}", lb.log_text()))?;
        Ok((lb, pin))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for host in &self.hosts {
            if let Some(prefix) = agent_state_prefix(&host.netns) {
                remove_run_files(&prefix);
            }
            let _ = sh("ip", &["netns", "del", &host.netns]);
        }
        // Instance locks are named after their pin paths, '/' as '%'.
        if let Some(base) = self.bpffs.parent() {
            remove_run_files(&base.to_string_lossy().replace('/', "%"));
        }
        let _ = sh("ip", &["netns", "del", &self.bridge_ns]);
        if let Some(bpffs) = self.bpffs.to_str() {
            let _ = sh("umount", &[bpffs]);
        }
        if let Some(base) = self.bpffs.parent()
            && std::env::var_os("XDP_LB_KEEP_LOGS").is_none()
        {
            let _ = fs::remove_dir_all(base);
        }
    }
}

/// Builds a topology, runs `body` on it (printing the logs if it fails)
/// and tears it down: the whole of a namespace test.
pub fn with_topology(
    hosts: u8,
    bridge: Bridge,
    body: impl FnOnce(&Topology) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    Topology::new(hosts, bridge)?.run(body)
}

/// Removes the files under /run/xdp-lb whose names start with `prefix`:
/// what processes this topology killed leave there (an LB's instance lock,
/// an agent's state file); ones that exit cleanly remove their own.
fn remove_run_files(prefix: &str) {
    let Ok(entries) = fs::read_dir("/run/xdp-lb") else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The prefix of the state files of agents in `netns` (named after the
/// namespace's inode).
fn agent_state_prefix(netns: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let inode = fs::metadata(Path::new("/run/netns").join(netns))
        .ok()?
        .ino();
    Some(format!("agent-{inode}-"))
}

/// The first group of a status report (a report without one is an error
/// of the LB, not a group without backends).
pub fn first_group(status: &StatusReport) -> &GroupReport {
    status
        .groups
        .first()
        .expect("status lists the configured group")
}

/// Addresses registered in the first group, sorted.
pub fn registered(status: &StatusReport) -> Vec<String> {
    let mut addrs: Vec<String> = first_group(status)
        .backends
        .iter()
        .map(|b| b.address.to_string())
        .collect();
    addrs.sort();
    addrs
}

/// Why `addr` left the first group, if status lists it as departed.
pub fn departure_reason(status: &StatusReport, addr: &str) -> Option<String> {
    first_group(status)
        .departed
        .iter()
        .find(|d| d.address.to_string() == addr)
        .map(|d| d.reason.clone())
}

/// The value of `counter` in a status report; an error if the report has
/// no such counter (renamed or removed), never a silent zero.
pub fn counter(status: &StatusReport, counter: Counter) -> anyhow::Result<u64> {
    Ok(status.counter(counter)?)
}

impl Topology {
    /// Prints every process log of this topology (for a failing test).
    pub fn dump_logs(&self) {
        let Ok(entries) = fs::read_dir(&self.logs) else {
            return;
        };
        for entry in entries.flatten() {
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "--- {} (last {} lines)\n{}",
                entry.path().display(),
                tail.len(),
                tail.join("\n")
            );
        }
    }

    /// Runs `body`, printing the logs if it fails.
    pub fn run(&self, body: impl FnOnce(&Self) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let result = body(self);
        if result.is_err() {
            self.dump_logs();
        }
        result
    }
}

impl Topology {
    /// Runs one of the project's binaries in host `i` to completion.
    pub fn exec(&self, i: usize, binary: &str, args: &[&str]) -> anyhow::Result<Output> {
        self.exec_program(i, bin(binary).to_str().context("binary path")?, args)
    }

    /// Runs any program in host `i` to completion, failing if it fails.
    pub fn exec_program(&self, i: usize, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        self.exec_program_in(&self.hosts[i].netns, program, args)
    }

    /// Runs any program in network namespace `netns` (a host's or the
    /// bridge's) to completion, failing if it fails.
    pub fn exec_program_in(
        &self,
        netns: &str,
        program: &str,
        args: &[&str],
    ) -> anyhow::Result<Output> {
        let mut full = vec!["netns", "exec", netns, program];
        full.extend_from_slice(args);
        sh("ip", &full)
    }
}
