//! Helpers for the network-namespace integration tests: a bridge with hosts
//! on it, processes of the project's binaries inside them, and status reads.
//! Everything a test builds is torn down by `Drop`, on success and failure.
use std::{
    fs,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context;
pub use lb_common::{Counter, GsoCounter};
pub use lb_host::status::{GroupReport, StatusReport};

pub mod fd_store;
mod lb;
mod process;
pub mod raw;
pub mod routed;

pub use lb::*;
pub use process::*;

/// Topologies are built one at a time: timing assertions need the CPUs.
static SERIAL: Mutex<()> = Mutex::new(());
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

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
                    // Likewise MLDv1 for IPv6 hosts.
                    "mcast_mld_version",
                    "2",
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

    /// Gives host `i` IPv6 at once (no duplicate address detection): the
    /// link-local address fe80::`i + 1` only, and the global
    /// 2001:db8:`net`::`i + 1`/64 of this topology's segment, which it returns.
    pub fn ipv6(&self, i: usize) -> anyhow::Result<Ipv6Addr> {
        let global = self.ipv6_address(i);
        self.ipv6_with(i, i as u16 + 1, global)?;
        Ok(global)
    }

    /// Gives host `i` the link-local address fe80::`k` only and `global`/64,
    /// neither waiting for duplicate address detection.
    pub fn ipv6_with(&self, i: usize, k: u16, global: Ipv6Addr) -> anyhow::Result<()> {
        self.sysctl(i, "net.ipv6.conf.eth0.addr_gen_mode", "1")?;
        self.exec_program(
            i,
            "ip",
            &["-6", "addr", "flush", "dev", "eth0", "scope", "link"],
        )?;
        for addr in [format!("fe80::{k:x}/64"), format!("{global}/64")] {
            self.exec_program(
                i,
                "ip",
                &["-6", "addr", "add", &addr, "dev", "eth0", "nodad"],
            )?;
        }
        Ok(())
    }

    /// The global IPv6 address [`Topology::ipv6`] gives host `i`.
    pub fn ipv6_address(&self, i: usize) -> Ipv6Addr {
        let net = u16::from(self.hosts[0].addr.octets()[1]);
        Ipv6Addr::new(0x2001, 0xdb8, net, 0, 0, 0, 0, i as u16 + 1)
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
            .map(|&h| self.start_server(h, "0.0.0.0:80"))
            .collect()
    }

    /// The test HTTP server of [`Topology::start_servers`] on `host`,
    /// listening on `listen` (`[::]:80` for both families).
    pub fn start_server(&self, host: usize, listen: &str) -> anyhow::Result<Proc> {
        self.spawn(
            host,
            &format!("server{host}"),
            "name-server",
            &[listen, &format!("b{host}")],
        )
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
/// and tears it down: the whole of a namespace test; what `body` returns.
pub fn with_topology<T>(
    hosts: u8,
    bridge: Bridge,
    body: impl FnOnce(&Topology) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
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
    pub fn run<T>(&self, body: impl FnOnce(&Self) -> anyhow::Result<T>) -> anyhow::Result<T> {
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
