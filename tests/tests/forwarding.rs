//! End-to-end forwarding: a client, the LB with a VIP and three
//! backends running HTTP servers that answer with their own name, on one
//! bridge. Real XDP_TX, real direct server return, real TCP.
use std::{
    collections::BTreeMap,
    process::Command,
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use lb_tests::{
    Bridge, Counter, FAST_TIMERS, Proc, StatusReport, Topology, check_args, counter, first_answer,
    first_group, wait_for,
};
use serde_json::Value;

const P: Duration = Duration::from_millis(200);
const POLL: Duration = Duration::from_millis(20);
const LB: usize = 0;
const CLIENT: usize = 4;
/// Backend hosts and their weights.
const BACKENDS: [(usize, u16); 3] = [(1, 100), (2, 200), (3, 300)];

struct Bed<'a> {
    topo: &'a Topology,
    pin: std::path::PathBuf,
    /// The LB and the arguments it was started with (for a restart).
    lb: Proc,
    lb_args: Vec<String>,
    vip: String,
    /// A second VIP, of a group that has no backend.
    vip2: String,
    agents: BTreeMap<usize, Proc>,
    key: String,
    /// Arguments every agent gets beside the usual ones (service checks).
    agent_extra: Vec<String>,
    servers: BTreeMap<usize, Proc>,
}

fn name(host: usize) -> String {
    format!("b{host}")
}

impl Bed<'_> {
    fn start_agent(&mut self, host: usize, weight: u16) -> anyhow::Result<()> {
        let extra = self.agent_extra.clone();
        self.start_agent_with(host, weight, &extra)
    }

    /// Starts host's agent with `extra` arguments instead of `agent_extra`.
    fn start_agent_with(
        &mut self,
        host: usize,
        weight: u16,
        extra: &[String],
    ) -> anyhow::Result<()> {
        let weight = weight.to_string();
        let mut args = vec![
            "--iface",
            "eth0",
            "--vip",
            &self.vip,
            "--weight",
            &weight,
            "--key-file",
            &self.key,
        ];
        args.extend(extra.iter().map(String::as_str));
        let agent = self.topo.spawn(
            host,
            &format!("agent{host}-{}", self.agents.len()),
            "backend-agent",
            &args,
        )?;
        self.agents.insert(host, agent);
        Ok(())
    }

    /// Starts host's HTTP server, which answers with its name.
    fn start_server(&mut self, host: usize) -> anyhow::Result<()> {
        let server = self.topo.spawn(
            host,
            &format!("server{host}-{}", self.servers.len()),
            "name-server",
            &["0.0.0.0:80", &name(host)],
        )?;
        self.servers.insert(host, server);
        Ok(())
    }

    fn status(&self) -> anyhow::Result<StatusReport> {
        self.topo.status(&self.pin)
    }

    /// Backends registered with the given state ("active" or "draining").
    fn with_state(&self, state: &str) -> anyhow::Result<Vec<String>> {
        let status = self.status()?;
        Ok(first_group(&status)
            .backends
            .iter()
            .filter(|b| b.state == state)
            .map(|b| b.address.to_string())
            .collect())
    }

    fn wait_state(&self, want: usize, state: &str) -> anyhow::Result<()> {
        wait_for(Duration::from_secs(5), POLL, || {
            self.with_state(state).ok().filter(|b| b.len() == want)
        })
        .with_context(|| format!("{want} backends {state} not reached"))?;
        self.topo.wait_tables(&self.pin)?;
        Ok(())
    }

    /// `count` short connections from the client; per-name counts and errors.
    fn spread(&self, count: u32) -> anyhow::Result<(BTreeMap<String, u64>, u64)> {
        self.spread_to(&self.vip, count)
    }

    fn spread_to(&self, vip: &str, count: u32) -> anyhow::Result<(BTreeMap<String, u64>, u64)> {
        self.topo.spread(CLIENT, &format!("{vip}:80"), count)
    }

    /// A long-lived connection; returns it and the backend it landed on.
    fn hold(&self, label: &str, seconds: u32) -> anyhow::Result<(Proc, String)> {
        let target = format!("{}:80", self.vip);
        let proc_ = self.topo.spawn(
            CLIENT,
            label,
            "http-probe",
            &["hold", &target, &seconds.to_string()],
        )?;
        let first = first_answer(&proc_)?;
        Ok((proc_, first))
    }
}

/// Waits for a hold connection to end; it must have stayed on `backend`.
fn hold_result(mut proc_: Proc, backend: &str) -> anyhow::Result<Value> {
    proc_.wait_exit(Duration::from_secs(15))?;
    let text = proc_.log_text();
    let last = text.lines().last().context("no output")?;
    let v: Value = serde_json::from_str(last)?;
    ensure!(
        v["error"].is_null(),
        "{}: connection failed: {}",
        proc_.name,
        v["error"]
    );
    ensure!(
        v["names"] == serde_json::json!([backend]),
        "{}: moved between backends: {}",
        proc_.name,
        v["names"]
    );
    Ok(v)
}

/// The LB serving a VIP (from a config file, with a second, backendless
/// group and VIP), authenticated announcements, and three backends with
/// weights 1:2:3 running the test HTTP server, all registered and active.
fn serving(topo: &Topology) -> anyhow::Result<Bed<'_>> {
    serving_with(topo, &[])
}

/// The same, every agent started with `agent_extra` too.
fn serving_with<'a>(topo: &'a Topology, agent_extra: &[&str]) -> anyhow::Result<Bed<'a>> {
    let vip = topo.segment_address(100).to_string();
    let vip2 = topo.segment_address(101).to_string();
    let pin = topo.pin_path("lb");
    let pin_str = pin.to_str().context("pin")?.to_owned();
    // Through a config file: the service's group, and a second group with
    // a VIP of its own that has no backend.
    let config = topo.logs.join("lb.toml");
    std::fs::write(
        &config,
        format!(
            "[[group]]\naddress = \"239.192.0.1\"\nvip = \"{vip}\"\nservices = [\"tcp:80\"]\n\n\
             [[group]]\naddress = \"239.192.0.2\"\nport = 2001\nvip = \"{vip2}\"\nservices = [\"tcp:80\"]\n"
        ),
    )?;
    let config = config.to_str().context("config path")?.to_owned();
    // Announcements are authenticated: the agents only register if XDP
    // accepts their tags.
    let key = topo.logs.join("announce.key");
    std::fs::write(&key, "00112233445566778899aabbccddeeff\n")?;
    let key = key.to_str().context("key path")?.to_owned();
    let lb_args: Vec<String> = [
        // The default --xdp-mode (auto) must forward on this veth.
        &[
            "run",
            "--iface",
            "eth0",
            "--config",
            &config,
            "--key-file",
            &key,
        ][..],
        &FAST_TIMERS,
        &["--pin-path", &pin_str],
    ]
    .concat()
    .into_iter()
    .map(str::to_owned)
    .collect();
    let args: Vec<&str> = lb_args.iter().map(String::as_str).collect();
    let lb = topo.spawn(LB, "lb", "lb-user", &args)?;
    wait_for(Duration::from_secs(10), POLL, || {
        topo.configured_status(&pin)
    })
    .context("the LB did not start")?;
    // The default --xdp-mode picks a mode that forwards here, and says so.
    ensure!(
        lb.log_text()
            .contains("XDP mode: generic (skb) mode on a veth"),
        "the LB did not log its XDP mode: {}",
        lb.log_text()
    );
    // Backends on the segment only: no IPIP, so no forwarding sysctl change.
    ensure!(
        !lb.log_text().contains("forwarding on"),
        "an L2-only LB turned forwarding on: {}",
        lb.log_text()
    );
    let mut bed = Bed {
        topo,
        pin,
        lb,
        lb_args,
        vip,
        vip2,
        agents: BTreeMap::new(),
        key: key.clone(),
        agent_extra: agent_extra.iter().map(|a| (*a).to_owned()).collect(),
        servers: BTreeMap::new(),
    };
    for (host, weight) in BACKENDS {
        bed.start_server(host)?;
        bed.start_agent(host, weight)?;
    }
    bed.wait_state(3, "active")?;
    Ok(bed)
}

/// Short connections spread by weight (1:2:3), within +-15%; the
/// backendless VIP's connections are dropped and counted; no agent's
/// announcement was rejected.
fn spread_follows_the_weights(bed: &mut Bed<'_>) -> anyhow::Result<()> {
    let total = 3000;
    let started = Instant::now();
    let (names, errors) = bed.spread(total)?;
    println!(
        "spread of {total} connections in {} ms: {names:?}, {errors} errors",
        started.elapsed().as_millis()
    );
    ensure!(errors == 0, "{errors} connections failed");
    let weight_sum: u64 = BACKENDS.iter().map(|(_, w)| u64::from(*w)).sum();
    for (host, weight) in BACKENDS {
        let want = f64::from(total) * f64::from(weight) / weight_sum as f64;
        let got = names.get(&name(host)).copied().unwrap_or(0) as f64;
        ensure!(
            (got - want).abs() <= 0.15 * want,
            "{}: {got} connections, want {want:.0} +-15%",
            name(host)
        );
    }
    // The LB counted as much per backend: a new flow per connection (a
    // retransmitted SYN counts again).
    let status = bed.status()?;
    let service = status
        .services
        .iter()
        .find(|s| s.vip.to_string() == bed.vip)
        .context("the service in status")?;
    println!("per backend: {:?}", service.backends);
    for (host, _) in BACKENDS {
        let addr = bed.topo.host(host).addr;
        let counted = service
            .backends
            .iter()
            .find(|b| b.address == addr)
            .map_or(0, |b| b.new_flows);
        let served = names.get(&name(host)).copied().unwrap_or(0);
        ensure!(
            (served..=served + served / 20 + 5).contains(&counted),
            "{}: {counted} new flows counted for {served} connections",
            name(host)
        );
    }

    // The second VIP has no backend: its connections are dropped and counted.
    let (names, errors) = bed.spread_to(&bed.vip2, 3)?;
    ensure!(
        names.is_empty() && errors == 3,
        "the backendless VIP answered: {names:?}"
    );
    let status = bed.status()?;
    println!("counters: {:?}", status.counters);
    ensure!(
        counter(&status, Counter::VipNoBackend)? >= 3,
        "no-backend drops not counted"
    );
    for reject in [
        Counter::AuthBadTag,
        Counter::AuthReplay,
        Counter::AuthStale,
        Counter::AuthMissing,
    ] {
        ensure!(
            counter(&status, reject)? == 0,
            "an agent's announcement was rejected: {reject:?}"
        );
    }
    Ok(())
}

/// A long-lived connection survives another backend leaving and joining.
fn long_lived_connection_survives_churn(bed: &mut Bed<'_>) -> anyhow::Result<()> {
    let (hold, on) = bed.hold("hold-churn", 4)?;
    let (other, weight) = BACKENDS
        .iter()
        .copied()
        .find(|(h, _)| name(*h) != on)
        .context("another backend")?;
    bed.agents
        .get(&other)
        .context("agent")?
        .signal(libc::SIGTERM);
    bed.wait_state(2, "active")?;
    bed.start_agent(other, weight)?;
    bed.wait_state(3, "active")?;
    let v = hold_result(hold, &on)?;
    println!(
        "long-lived connection to {on} kept through {} leaving and joining: {} requests",
        name(other),
        v["requests"]
    );
    Ok(())
}

/// DRAINING keeps the open connection and gets no new ones.
fn draining_keeps_open_connections_and_gets_no_new_ones(bed: &mut Bed<'_>) -> anyhow::Result<()> {
    let (hold, on) = bed.hold("hold-drain", 3)?;
    let drained = BACKENDS
        .iter()
        .map(|(h, _)| *h)
        .find(|h| name(*h) == on)
        .context("backend")?;
    bed.agents
        .get(&drained)
        .context("agent")?
        .signal(libc::SIGUSR1);
    bed.wait_state(1, "draining")?;
    let (names, errors) = bed.spread(600)?;
    println!("with {on} draining: {names:?}, {errors} errors");
    ensure!(
        !names.contains_key(&on),
        "draining {on} got new connections"
    );
    ensure!(
        errors == 0,
        "{errors} connections failed while {on} drained"
    );
    let v = hold_result(hold, &on)?;
    println!(
        "open connection to draining {on} kept: {} requests",
        v["requests"]
    );
    bed.agents
        .get(&drained)
        .context("agent")?
        .signal(libc::SIGUSR2);
    bed.wait_state(3, "active")?;
    Ok(())
}

/// After a backend leaves, no new connection reaches it once the table
/// is rebuilt, which takes at most one period.
fn left_backend_gets_no_connection_after_one_period(bed: &mut Bed<'_>) -> anyhow::Result<()> {
    let (gone, _) = BACKENDS[0];
    let gone_addr = bed.topo.host(gone).addr;
    let left = Instant::now();
    bed.agents
        .get(&gone)
        .context("agent")?
        .signal(libc::SIGTERM);
    wait_for(Duration::from_secs(5), POLL, || {
        let status = bed.status().ok()?;
        let listed = first_group(&status)
            .backends
            .iter()
            .any(|b| b.address == gone_addr);
        (!listed).then_some(())
    })
    .with_context(|| format!("{} still registered after leaving", name(gone)))?;
    bed.topo.wait_tables(&bed.pin)?;
    let rebuilt = left.elapsed();
    let (names, errors) = bed.spread(600)?;
    println!(
        "{} left; its table rebuilt {} ms after SIGTERM; then {names:?}, {errors} errors",
        name(gone),
        rebuilt.as_millis()
    );
    // A period, plus the status reads this loop makes on a busy machine.
    ensure!(
        rebuilt <= 2 * P,
        "the table took {rebuilt:?} to drop a leaving backend"
    );
    ensure!(
        !names.contains_key(&name(gone)),
        "{} got connections after leaving",
        name(gone)
    );
    ensure!(
        errors == 0,
        "{errors} connections failed after a backend left"
    );
    Ok(())
}

/// Restart without loss: SIGKILL the control plane while a connection is
/// open. XDP keeps forwarding from its pinned link and maps; a new lb-user
/// takes both over without a re-registration. Then a layout mismatch is
/// refused, and `stop` removes everything.
fn restart_without_loss(bed: &mut Bed<'_>) -> anyhow::Result<()> {
    let lb_args: Vec<&str> = bed.lb_args.iter().map(String::as_str).collect();
    let topo = bed.topo;
    let before = bed.status()?;
    let registrations = counter(&before, Counter::AnnounceRegistered)?;
    let active = bed.with_state("active")?;
    let (hold, on) = bed.hold("hold-restart", 3)?;
    bed.lb.signal(libc::SIGKILL);
    bed.lb.wait_exit(Duration::from_secs(5))?;
    let (names, errors) = bed.spread(300)?;
    println!("with the control plane killed: {names:?}, {errors} errors");
    ensure!(
        errors == 0 && !names.is_empty(),
        "forwarding stopped with the control plane"
    );
    let mut lb = topo.spawn(LB, "lb-restarted", "lb-user", &lb_args)?;
    wait_for(Duration::from_secs(10), POLL, || {
        lb.log_text()
            .contains("load balancer running")
            .then_some(())
    })
    .with_context(|| format!("the restarted LB did not come up: {}", lb.log_text()))?;
    ensure!(
        lb.log_text().contains("took over"),
        "the restarted LB did not adopt: {}",
        lb.log_text()
    );
    let v = hold_result(hold, &on)?;
    let after = bed.status()?;
    println!(
        "across SIGKILL and restart: connection kept ({} requests), longest gap between answers {} ms, \
         registrations counted before {registrations}, after {}",
        v["requests"],
        v["max_gap_ms"],
        counter(&after, Counter::AnnounceRegistered)?
    );
    ensure!(
        counter(&after, Counter::AnnounceRegistered)? == registrations,
        "backends registered again after the restart"
    );
    ensure!(
        bed.with_state("active")? == active,
        "registrations lost in the restart"
    );

    lb.signal(libc::SIGKILL);
    lb.wait_exit(Duration::from_secs(5))?;
    let mut other = lb_args.to_vec();
    other.extend(["--max-backends", "1000"]);
    let err = topo
        .exec(LB, "lb-user", &other)
        .err()
        .context("a mismatched layout was accepted")?;
    println!("mismatched restart refused: {err}");
    ensure!(
        err.to_string().contains("max_entries") && err.to_string().contains("lb-user stop"),
        "unclear error: {err}"
    );
    let pin = bed.pin.to_str().context("pin")?;
    topo.exec(LB, "lb-user", &["stop", "--pin-path", pin])?;
    ensure!(!bed.pin.exists(), "stop left pins behind");
    Ok(())
}

/// Service checks of the agents in the health tests (`check_args`): every
/// 200 ms, up after 2 passes, down after 2 failures.
const CHECK_INTERVAL: Duration = Duration::from_millis(200);
const RISE: u32 = 2;
const FALL: u32 = 2;

impl Bed<'_> {
    /// Waits until `host` is registered in `state`; returns how long it took.
    fn until_state(&self, host: usize, state: &str, limit: Duration) -> anyhow::Result<Duration> {
        let addr = self.topo.host(host).addr.to_string();
        let start = Instant::now();
        wait_for(limit, POLL, || {
            self.with_state(state).ok().filter(|b| b.contains(&addr))
        })
        .with_context(|| format!("{} not {state} within {limit:?}", name(host)))?;
        Ok(start.elapsed())
    }
}

/// A backend whose HTTP server dies is announced DOWN by its agent's check
/// and gets no new connection, while open connections to the others go on
/// and no client fails; when the server returns, so does its traffic.
fn service_checks_follow_the_server(bed: &mut Bed<'_>) -> anyhow::Result<()> {
    let (hold, on) = bed.hold("hold-health", 4)?;
    let (dead, _) = BACKENDS
        .iter()
        .copied()
        .find(|(h, _)| name(*h) != on)
        .context("another backend")?;
    bed.servers.remove(&dead); // killed on drop
    let down_bound = CHECK_INTERVAL * (FALL + 1) + P;
    let marked = bed.until_state(dead, "down", down_bound + Duration::from_secs(2))?;
    bed.topo.wait_tables(&bed.pin)?;
    let (names, errors) = bed.spread(600)?;
    println!(
        "{}'s server stopped: announced DOWN after {} ms (fall x interval + interval = {} ms); then {names:?}, {errors} errors",
        name(dead),
        marked.as_millis(),
        (CHECK_INTERVAL * (FALL + 1)).as_millis()
    );
    ensure!(
        marked <= down_bound,
        "DOWN after {marked:?}, more than {down_bound:?}"
    );
    ensure!(
        !names.contains_key(&name(dead)),
        "a DOWN backend got new connections"
    );
    ensure!(errors == 0, "{errors} connections failed once it was DOWN");
    let v = hold_result(hold, &on)?;
    println!("open connection to {on} kept: {} requests", v["requests"]);
    // The agent's own view: the LB it knows, DOWN, and the transition.
    let shown = bed
        .topo
        .exec(dead, "backend-agent", &["--status", "--iface", "eth0"])?;
    let shown = String::from_utf8_lossy(&shown.stdout);
    println!("backend-agent --status on {}:\n{shown}", name(dead));
    let lb_addr = bed.topo.host(LB).addr.to_string();
    ensure!(
        shown.contains("service: down")
            && shown.contains(&lb_addr)
            && shown.contains(" down: http://127.0.0.1:80/"),
        "--status does not show the LB, the DOWN state and its transition"
    );

    bed.start_server(dead)?;
    let up_bound = CHECK_INTERVAL * (RISE + 1) + P;
    let back = bed.until_state(dead, "active", up_bound + Duration::from_secs(2))?;
    bed.topo.wait_tables(&bed.pin)?;
    let (names, errors) = bed.spread(600)?;
    println!(
        "{}'s server back: announced UP after {} ms (rise x interval + interval = {} ms); then {names:?}, {errors} errors",
        name(dead),
        back.as_millis(),
        (CHECK_INTERVAL * (RISE + 1)).as_millis()
    );
    ensure!(
        back <= up_bound,
        "UP after {back:?}, more than {up_bound:?}"
    );
    ensure!(
        names.contains_key(&name(dead)),
        "the recovered backend got no connection"
    );
    ensure!(
        errors == 0,
        "{errors} connections failed after it came back"
    );
    Ok(())
}

/// A check that answers HTTP 500, or a command that hangs (killed at its
/// timeout), keeps its backend DOWN: registered, without traffic.
fn failing_checks_keep_a_backend_down(bed: &mut Bed<'_>) -> anyhow::Result<()> {
    let (host, weight) = BACKENDS[0];
    let marker = format!("sleep 9.{}", std::process::id() % 1000);
    for check in [
        "http://127.0.0.1:80/500".to_owned(),
        format!("exec:{marker}"),
    ] {
        let mut old = bed.agents.remove(&host).context("agent")?;
        old.signal(libc::SIGTERM);
        old.wait_exit(Duration::from_secs(5))?;
        bed.start_agent_with(host, weight, &check_args(&check))?;
        bed.until_state(host, "down", Duration::from_secs(3))?;
        // Several rounds: it never comes up.
        sleep(CHECK_INTERVAL * (RISE + 3));
        ensure!(
            bed.with_state("down")? == vec![bed.topo.host(host).addr.to_string()],
            "{check}: the backend left DOWN"
        );
        let (names, errors) = bed.spread(300)?;
        println!(
            "with {} checking {check}: {names:?}, {errors} errors",
            name(host)
        );
        ensure!(
            !names.contains_key(&name(host)),
            "{check}: a DOWN backend got connections"
        );
        ensure!(errors == 0, "{check}: {errors} connections failed");
    }
    let log = bed.agents.get(&host).context("agent")?.log_text();
    ensure!(
        log.contains("killed"),
        "the hung check was not reported killed: {log}"
    );
    let hung = Command::new("pgrep")
        .args(["-fc", &format!("^{marker}$")])
        .output()
        .context("running pgrep")?;
    let hung: u32 = String::from_utf8_lossy(&hung.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    println!(
        "hung check commands still running after {} rounds: {hung}",
        RISE + 3
    );
    ensure!(hung <= 1, "{hung} hung check commands left running");
    Ok(())
}

#[test]
fn service_checks_follow_the_server_with_checks() {
    lb_tests::with_topology(5, Bridge::Snooping, |topo| {
        service_checks_follow_the_server(&mut serving_with(
            topo,
            &check_args("http://127.0.0.1:80/")
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )?)
    })
    .unwrap();
}

#[test]
fn failing_checks_keep_a_backend_down_with_checks() {
    lb_tests::with_topology(5, Bridge::Snooping, |topo| {
        failing_checks_keep_a_backend_down(&mut serving(topo)?)
    })
    .unwrap();
}

/// One test per behaviour, each on a topology of its own.
macro_rules! forwarding_tests {
    ($($behaviour:ident),* $(,)?) => {
        $(
            #[test]
            fn $behaviour() {
                lb_tests::with_topology(5, Bridge::Snooping, |topo| super::$behaviour(&mut serving(topo)?)).unwrap();
            }
        )*
    };
}

mod forwarding {
    use super::*;

    forwarding_tests!(
        spread_follows_the_weights,
        long_lived_connection_survives_churn,
        draining_keeps_open_connections_and_gets_no_new_ones,
        left_backend_gets_no_connection_after_one_period,
        restart_without_loss,
    );
}
