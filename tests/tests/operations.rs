//! Operating it: the LB's and the agents' `/metrics` scraped
//! during a namespace test, validated with `promtool check metrics`,
//! compared with `status --json`, and followed as a backend leaves;
//! `status --watch`; an agent run from its settings file.
use std::{path::PathBuf, time::Duration};

use anyhow::{Context, ensure};
use lb_tests::{
    Bridge, Counter, FAST_TIMERS, Proc, Topology, check_args, counter, fd_store::FdStore,
    first_answer, first_group, registered, wait_for, with_topology,
};

const LB: usize = 0;
const AGENTS: [usize; 2] = [1, 2];
/// The client host of the tests that send traffic (topologies of four).
const CLIENT: usize = 3;
const POLL: Duration = Duration::from_millis(20);
const LB_METRICS: &str = "127.0.0.1:9100";
const AGENT_METRICS: &str = "127.0.0.1:9101";

/// `/metrics` of the endpoint at `addr` in host `i`, checked by promtool.
fn scrape(topo: &Topology, i: usize, addr: &str) -> anyhow::Result<String> {
    let out = topo.exec_program(i, "curl", &["-sf", &format!("http://{addr}/metrics")])?;
    let text = String::from_utf8(out.stdout)?;
    let file = topo.logs.join(format!("metrics-{i}.txt"));
    std::fs::write(&file, &text)?;
    let check = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", file.display()))
        .output()
        .context("running promtool")?;
    ensure!(
        check.status.success(),
        "promtool check metrics failed: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    Ok(text)
}

/// The value of the sample `series` (name and labels as printed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn both_endpoints_validate_follow_the_backends_and_match_status() -> anyhow::Result<()> {
    with_topology(3, Bridge::Flooding, |topo| {
        let mut args = FAST_TIMERS.to_vec();
        args.extend(["--metrics", LB_METRICS]);
        let (_lb, pin) = topo.start_lb(LB, "lb", &args)?;
        let mut agents =
            topo.spawn_agents(&AGENTS, &["--iface", "eth0", "--metrics", AGENT_METRICS])?;
        wait_for(Duration::from_secs(5), POLL, || {
            topo.status(&pin).ok().filter(|s| registered(s).len() == 2)
        })
        .context("the agents did not register")?;
        let group = "239.192.0.1";
        let leaving = topo.host(AGENTS[1]).addr.to_string();
        let series = |addr: &str| {
            format!(
                "xdp_lb_backend_registered{{group=\"{group}\",address=\"{addr}\",state=\"active\"}}"
            )
        };

        // A client that sends half a request and waits holds up no scrape,
        // and requests other than GET /metrics get their status codes.
        let _stalled = topo.spawn_program(
            LB,
            "stalled-client",
            "bash",
            &[
                "-c",
                &format!(
                    "exec 3<>/dev/tcp/{}; printf 'GET /metr' >&3; sleep 8",
                    LB_METRICS.replace(':', "/")
                ),
            ],
        )?;
        std::thread::sleep(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let lb = scrape(topo, LB, LB_METRICS)?;
        let scraped_in = started.elapsed();
        let code = |args: &[&str]| -> anyhow::Result<String> {
            let mut all = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}"];
            all.extend_from_slice(args);
            let out = topo.exec_program(LB, "curl", &all)?;
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let post = code(&["-X", "POST", &format!("http://{LB_METRICS}/metrics")])?;
        let elsewhere = code(&[&format!("http://{LB_METRICS}/elsewhere")])?;
        println!(
            "with a stalled client: scrape in {} ms; POST /metrics {post}, GET /elsewhere {elsewhere}",
            scraped_in.as_millis()
        );
        ensure!(
            scraped_in < Duration::from_secs(2),
            "a stalled client held the scrape up for {scraped_in:?}"
        );
        ensure!(
            (post.as_str(), elsewhere.as_str()) == ("405", "404"),
            "POST /metrics answered {post}, GET /elsewhere {elsewhere}"
        );
        // The status page and the document it reads.
        let page = topo.exec_program(LB, "curl", &["-sf", &format!("http://{LB_METRICS}/")])?;
        let page = String::from_utf8_lossy(&page.stdout);
        ensure!(
            page.contains("<title>xdp-lb status</title>") && page.contains("/status.json"),
            "no status page at /: {page}"
        );
        let json = topo.exec_program(
            LB,
            "curl",
            &["-sf", &format!("http://{LB_METRICS}/status.json")],
        )?;
        let document: lb_tests::StatusReport = serde_json::from_slice(&json.stdout)
            .with_context(|| format!("/status.json: {}", String::from_utf8_lossy(&json.stdout)))?;
        ensure!(
            registered(&document).len() == 2,
            "/status.json lists {:?}",
            registered(&document)
        );
        let status = topo.status(&pin)?;
        println!(
            "LB metrics: {} lines; {}",
            lb.lines().count(),
            lb.lines()
                .filter(|l| l.starts_with("xdp_lb_backend_registered"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        for addr in registered(&status) {
            ensure!(
                sample(&lb, &series(&addr)) == Some(1.0),
                "{addr} missing: {lb}"
            );
        }
        let registered_total = sample(&lb, "xdp_lb_packets_total{reason=\"announce_registered\"}");
        ensure!(
            registered_total == Some(counter(&status, Counter::AnnounceRegistered)? as f64),
            "announce_registered: metrics {registered_total:?}, status {}",
            counter(&status, Counter::AnnounceRegistered)?
        );
        ensure!(
            sample(&lb, &format!("xdp_lb_group_backends{{group=\"{group}\"}}")) == Some(2.0),
            "group_backends"
        );
        ensure!(
            lb.contains("xdp_lb_control_pass_seconds_bucket"),
            "no pass histogram"
        );
        ensure!(
            lb.contains("process_resident_memory_bytes"),
            "no process basics"
        );

        let agent = scrape(topo, AGENTS[0], AGENT_METRICS)?;
        let lb_addr = topo.host(LB).addr;
        // The agent's page and the state it reads.
        let get = |path: &str| -> anyhow::Result<String> {
            let url = format!("http://{AGENT_METRICS}{path}");
            let out = topo.exec_program(AGENTS[0], "curl", &["-sf", &url])?;
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        ensure!(
            get("/")?.contains("<title>xdp-lb agent status</title>"),
            "no agent status page"
        );
        let state: serde_json::Value = serde_json::from_str(&get("/status.json")?)?;
        ensure!(
            state["lbs"] == serde_json::json!([lb_addr.to_string()]),
            "the agent's /status.json: {state}"
        );
        let queries = sample(
            &agent,
            &format!("xdp_lb_agent_queries_total{{lb=\"{lb_addr}\",via=\"segment\"}}"),
        );
        let announced = sample(
            &agent,
            &format!("xdp_lb_agent_announcements_sent_total{{lb=\"{lb_addr}\"}}"),
        );
        println!("agent metrics: queries {queries:?}, announcements {announced:?}");
        ensure!(
            queries.is_some_and(|q| q >= 1.0),
            "no query counted: {agent}"
        );
        ensure!(
            announced.is_some_and(|a| a >= 1.0),
            "no announcement counted"
        );
        ensure!(
            sample(&agent, "xdp_lb_agent_service_state{state=\"unchecked\"}") == Some(1.0),
            "service state"
        );

        agents[1].signal(libc::SIGTERM);
        agents[1].wait_exit(Duration::from_secs(3))?;
        let gone = wait_for(Duration::from_secs(3), POLL, || {
            let text = scrape(topo, LB, LB_METRICS).ok()?;
            (!text.contains(&format!("address=\"{leaving}\""))).then_some(text)
        });
        ensure!(gone.is_some(), "{leaving}'s series outlived it");
        Ok(())
    })
}

/// `status --watch` redraws the table in place until Ctrl-C, which ends
/// it cleanly.
#[test]
fn status_watch_redraws_until_ctrl_c() -> anyhow::Result<()> {
    with_topology(2, Bridge::Flooding, |topo| {
        let (_lb, pin) = topo.start_lb(LB, "lb", &FAST_TIMERS)?;
        let _agent = topo.spawn(AGENTS[0], "agent", "backend-agent", &["--iface", "eth0"])?;
        wait_for(Duration::from_secs(5), POLL, || {
            topo.status(&pin).ok().filter(|s| registered(s).len() == 1)
        })
        .context("the agent did not register")?;
        let pin = pin.to_str().context("pin")?;
        let mut watch = topo.spawn(
            LB,
            "watch",
            "lb-user",
            &[
                "status",
                "--watch",
                "--interval",
                "100ms",
                "--pin-path",
                pin,
            ],
        )?;
        let redraws = wait_for(Duration::from_secs(5), POLL, || {
            let n = watch.log_text().matches("\x1b[H\x1b[J").count();
            (n >= 3).then_some(n)
        });
        ensure!(redraws.is_some(), "no redraws: {:?}", watch.log_text());
        watch.signal(libc::SIGINT);
        ensure!(
            watch.wait_exit(Duration::from_secs(3))? == 0,
            "Ctrl-C did not end it cleanly"
        );
        let text = watch.log_text();
        ensure!(
            text.contains(&topo.host(AGENTS[0]).addr.to_string()),
            "no backend shown: {text}"
        );
        Ok(())
    })
}

/// An agent started with nothing but `--config FILE` runs as its flags
/// would make it; SIGHUP reads the file again; a flag on the command line
/// overrides the file.
#[test]
fn an_agent_runs_from_its_settings_file() -> anyhow::Result<()> {
    with_topology(2, Bridge::Flooding, |topo| {
        let (_lb, pin) = topo.start_lb(LB, "lb", &FAST_TIMERS)?;
        let file = topo.logs.join("agent.toml");
        std::fs::write(
            &file,
            "iface = \"eth0\"\nweight = 250\ngroup = \"239.192.0.1\"\n",
        )?;
        let file = file.to_str().context("path")?;
        let _agent = topo.spawn(AGENTS[0], "agent", "backend-agent", &["--config", file])?;
        let weight = |want: u16| {
            wait_for(Duration::from_secs(5), POLL, || {
                let status = topo.status(&pin).ok()?;
                let b = lb_tests::first_group(&status).backends.first()?.weight;
                (b == want).then_some(())
            })
        };
        ensure!(weight(250).is_some(), "the file's weight was not announced");
        let mut agent = _agent;
        // A reload (SIGHUP, the unit's ExecReload) applies a new weight at
        // once and says that a new group waits for a restart.
        std::fs::write(
            file,
            "iface = \"eth0\"\nweight = 120\ngroup = \"239.192.0.2\"\n",
        )?;
        agent.signal(libc::SIGHUP);
        ensure!(
            weight(120).is_some(),
            "the reloaded weight was not announced: {}",
            agent.log_text()
        );
        ensure!(
            agent
                .log_text()
                .contains("--group changed; it takes effect on the next restart"),
            "{}",
            agent.log_text()
        );
        std::fs::write(
            file,
            "iface = \"eth0\"\nweight = 250\ngroup = \"239.192.0.1\"\n",
        )?;
        agent.signal(libc::SIGTERM);
        agent.wait_exit(Duration::from_secs(3))?;
        let _override = topo.spawn(
            AGENTS[0],
            "agent-override",
            "backend-agent",
            &["--config", file, "--weight", "50"],
        )?;
        ensure!(
            weight(50).is_some(),
            "the command line did not override the file"
        );
        Ok(())
    })
}

/// The restart a service manager does (`RestartKillSignal=SIGQUIT` in
/// the unit): lb-user exits keeping state, XDP forwards meanwhile, the next
/// `run` adopts everything: no connection fails or moves, no backend is
/// registered again, a scrape from its first moment shows the adopted
/// backends. SIGTERM (a stop) still removes everything.
#[test]
fn an_lb_restarted_with_sigquit_loses_nothing_and_a_stop_still_removes() -> anyhow::Result<()> {
    with_topology(4, Bridge::Flooding, |topo| {
        let vip = topo.segment_address(100).to_string();
        let mut args = FAST_TIMERS.to_vec();
        args.extend(["--vip", &vip, "--service", "tcp:80"]);
        let (mut lb, pin) = topo.start_lb(LB, "lb", &args)?;
        let _servers = topo.start_servers(&AGENTS)?;
        let _agents = topo.spawn_agents(&AGENTS, &["--iface", "eth0", "--vip", &vip])?;
        wait_for(Duration::from_secs(5), POLL, || {
            topo.status(&pin).ok().filter(|s| registered(s).len() == 2)
        })
        .context("the agents did not register")?;
        topo.wait_tables(&pin)?;
        let registrations = counter(&topo.status(&pin)?, Counter::AnnounceRegistered)?;
        let target = format!("{vip}:80");
        let mut hold = topo.spawn(CLIENT, "hold", "http-probe", &["hold", &target, "3"])?;
        first_answer(&hold)?;

        lb.signal(libc::SIGQUIT);
        ensure!(
            lb.wait_exit(Duration::from_secs(5))? == 0,
            "SIGQUIT: not a clean exit"
        );
        ensure!(lb.log_text().contains("keeping state"), "{}", lb.log_text());
        let spread = topo.exec(CLIENT, "http-probe", &["spread", &target, "200"])?;
        let spread = String::from_utf8_lossy(&spread.stdout).into_owned();
        println!("with lb-user gone after SIGQUIT: {}", spread.trim());
        ensure!(
            spread.contains("\"errors\":0"),
            "forwarding stopped: {spread}"
        );

        let pin_str = pin.to_str().context("pin")?;
        let mut again = vec!["run", "--iface", "eth0", "--pin-path", pin_str];
        again.extend(args.iter().copied());
        again.extend(["--metrics", LB_METRICS]);
        let mut restarted = topo.spawn(LB, "lb-restarted", "lb-user", &again)?;
        // Scraped from the start: the endpoint is bound before the
        // adoption, so the first scrape waits for it and shows its result.
        let started = std::time::Instant::now();
        let first = wait_for(Duration::from_secs(10), POLL, || {
            scrape(topo, LB, LB_METRICS).ok()
        })
        .with_context(|| format!("no scrape answered: {}", restarted.log_text()))?;
        let series = first
            .lines()
            .filter(|l| l.starts_with("xdp_lb_backend_registered{"))
            .count();
        println!(
            "first scrape of the restarted LB answered {} ms after its start, {series} backends",
            started.elapsed().as_millis()
        );
        ensure!(series == 2, "the first scrape missed backends: {first}");
        ensure!(
            restarted.log_text().contains("took over"),
            "no adoption: {}",
            restarted.log_text()
        );
        hold.wait_exit(Duration::from_secs(10))?;
        let held = hold.log_text();
        println!(
            "connection across the restart: {}",
            held.lines().last().unwrap_or_default()
        );
        ensure!(
            held.contains("\"error\":null"),
            "the connection broke: {held}"
        );
        ensure!(
            held.matches("\"b").count() == 1,
            "the connection changed backend: {held}"
        );
        let status = topo.status(&pin)?;
        ensure!(registered(&status).len() == 2, "backends lost");
        ensure!(
            counter(&status, Counter::AnnounceRegistered)? == registrations,
            "backends registered again after the restart"
        );

        restarted.signal(libc::SIGTERM);
        ensure!(
            restarted.wait_exit(Duration::from_secs(5))? == 0,
            "SIGTERM: not a clean exit"
        );
        ensure!(topo.status(&pin).is_err(), "a stop left the pins");
        Ok(())
    })
}

/// The restart of an agent that its unit does (`RestartKillSignal=SIGQUIT`,
/// `FileDescriptorStoreMax=2`), with the test in systemd's part of the
/// descriptor store (no systemd runs as PID 1 here): during the traffic of
/// 200 connections both agents exit keeping state and new ones take it
/// over. No connection fails or moves, the LB sees no leave and no new
/// registration, and no heartbeat is missed. A stop (SIGTERM) still
/// removes the backend and undoes the VIP setup.
#[test]
fn an_agent_restarted_with_sigquit_loses_nothing_and_a_stop_still_removes() -> anyhow::Result<()> {
    with_topology(4, Bridge::Flooding, |topo| {
        let vip = topo.segment_address(100).to_string();
        let (lb, pin) = topo.start_lb(LB, "lb", &["--vip", &vip, "--service", "tcp:80"])?;
        let _servers = topo.start_servers(&AGENTS)?;
        let pin_dir = topo.bpffs.join("agents");
        let pin_dir = pin_dir.to_str().context("pin dir")?;
        let args = ["--iface", "eth0", "--vip", &vip, "--pin-path", pin_dir];
        let mut stores = Vec::new();
        let mut agents = Vec::new();
        for h in AGENTS {
            let mut store = FdStore::bind(&topo.logs.join(format!("notify{h}")))?;
            agents.push(topo.spawn_managed(
                h,
                &format!("agent{h}"),
                "backend-agent",
                &args,
                &mut store,
            )?);
            stores.push(store);
        }
        wait_for(Duration::from_secs(5), POLL, || {
            topo.status(&pin).ok().filter(|s| registered(s).len() == 2)
        })
        .context("the agents did not register")?;
        wait_for(Duration::from_secs(5), POLL, || {
            lb.log_text().contains("backends=2").then_some(())
        })
        .context("no forwarding table with both backends")?;
        let before = topo.status(&pin)?;
        let registrations = counter(&before, Counter::AnnounceRegistered)?;
        let leaves = first_group(&before).leaves;
        let target = format!("{vip}:80");
        let mut probe = topo.spawn(CLIENT, "probe", "http-probe", &["many", &target, "4"])?;
        std::thread::sleep(Duration::from_secs(1));

        let mut most_misses = 0;
        for (k, h) in AGENTS.into_iter().enumerate() {
            agents[k].signal(libc::SIGQUIT);
            ensure!(
                agents[k].wait_exit(Duration::from_secs(5))? == 0,
                "SIGQUIT: not a clean exit"
            );
            let log = agents[k].log_text();
            ensure!(log.contains("keeping state"), "{log}");
            let held = stores[k].names()?;
            ensure!(
                held == ["igmp", "routed"],
                "the store holds {held:?}: {log}"
            );
            let restarted = format!("agent{h}-restarted");
            agents[k] =
                topo.spawn_managed(h, &restarted, "backend-agent", &args, &mut stores[k])?;
            wait_for(Duration::from_secs(5), POLL, || {
                if let Ok(status) = topo.status(&pin) {
                    let misses = first_group(&status).backends.iter().map(|b| b.misses);
                    most_misses = misses.fold(most_misses, u32::max);
                }
                agents[k]
                    .log_text()
                    .contains("adopted the predecessor")
                    .then_some(())
            })
            .with_context(|| format!("no adoption: {}", agents[k].log_text()))?;
            ensure!(
                stores[k].names()?.is_empty(),
                "the store still holds sockets"
            );
        }
        probe.wait_exit(Duration::from_secs(20))?;
        let result = probe.log_text();
        println!(
            "200 connections across both agents' restarts: {}",
            result.trim()
        );
        ensure!(
            result.contains("\"failures\":0") && result.contains("\"moved\":0"),
            "connections failed or moved: {result}"
        );
        // Two query periods: every backend answered the new agents' queries.
        std::thread::sleep(Duration::from_secs(2));
        let after = topo.status(&pin)?;
        let misses = first_group(&after).backends.iter().map(|b| b.misses);
        most_misses = misses.fold(most_misses, u32::max);
        println!(
            "registrations {registrations} -> {}, leaves {leaves} -> {}, most misses seen {most_misses}",
            counter(&after, Counter::AnnounceRegistered)?,
            first_group(&after).leaves
        );
        ensure!(registered(&after).len() == 2, "backends lost");
        ensure!(
            counter(&after, Counter::AnnounceRegistered)? == registrations,
            "backends registered again"
        );
        ensure!(first_group(&after).leaves == leaves, "the LB saw a leave");
        ensure!(
            most_misses == 0,
            "a heartbeat was missed during the restart"
        );

        agents[0].signal(libc::SIGTERM);
        ensure!(
            agents[0].wait_exit(Duration::from_secs(5))? == 0,
            "SIGTERM: not a clean exit"
        );
        wait_for(Duration::from_secs(1), POLL, || {
            topo.status(&pin).ok().filter(|s| registered(s).len() == 1)
        })
        .context("a stopped agent's backend stayed")?;
        let lo = topo.exec_program(AGENTS[0], "ip", &["-o", "addr", "show", "dev", "lo"])?;
        ensure!(
            !String::from_utf8_lossy(&lo.stdout).contains(&format!(" {vip}/")),
            "the stop left the VIP on the loopback"
        );
        let arp = topo.exec_program(
            AGENTS[0],
            "sysctl",
            &["-n", "net.ipv4.conf.eth0.arp_ignore"],
        )?;
        ensure!(
            String::from_utf8_lossy(&arp.stdout).trim() == "0",
            "the stop did not restore arp_ignore"
        );
        Ok(())
    })
}

/// SIGHUP (the unit's reload) reads the key files again: a backend with
/// the new key registers, one with the old key is refused and ages out.
#[test]
fn sighup_rotates_the_announcement_key_without_a_restart() -> anyhow::Result<()> {
    with_topology(3, Bridge::Flooding, |topo| {
        let write_key = |name: &str, hex: &str| -> anyhow::Result<String> {
            let path = topo.logs.join(name);
            std::fs::write(&path, format!("{hex}\n"))?;
            Ok(path.to_str().context("path")?.to_owned())
        };
        let old = write_key("old.key", "00112233445566778899aabbccddeeff")?;
        let new = write_key("new.key", "ffeeddccbbaa99887766554433221100")?;
        let lb_key = write_key("lb.key", "00112233445566778899aabbccddeeff")?;
        let mut args = FAST_TIMERS.to_vec();
        args.extend(["--key-file", &lb_key]);
        let (lb, pin) = topo.start_lb(LB, "lb", &args)?;
        let _old_agent = topo.spawn(
            AGENTS[0],
            "agent-old",
            "backend-agent",
            &["--iface", "eth0", "--key-file", &old],
        )?;
        let old_addr = topo.host(AGENTS[0]).addr.to_string();
        let new_addr = topo.host(AGENTS[1]).addr.to_string();
        wait_for(Duration::from_secs(5), POLL, || {
            topo.status(&pin)
                .ok()
                .filter(|s| registered(s) == [old_addr.clone()])
        })
        .context("the agent with the first key did not register")?;

        write_key("lb.key", "ffeeddccbbaa99887766554433221100")?;
        lb.signal(libc::SIGHUP);
        wait_for(Duration::from_secs(3), POLL, || {
            lb.log_text().contains("keys read again").then_some(())
        })
        .with_context(|| format!("no reload: {}", lb.log_text()))?;
        let _new_agent = topo.spawn(
            AGENTS[1],
            "agent-new",
            "backend-agent",
            &["--iface", "eth0", "--key-file", &new],
        )?;
        let after = wait_for(Duration::from_secs(5), POLL, || {
            topo.status(&pin)
                .ok()
                .filter(|s| registered(s) == [new_addr.clone()])
        })
        .context("after the reload: the new key's backend not in, or the old key's not out")?;
        println!(
            "after SIGHUP: {:?} registered, {} announcements refused for their tag",
            registered(&after),
            counter(&after, Counter::AuthBadTag)?
        );
        ensure!(
            counter(&after, Counter::AuthBadTag)? > 0,
            "the old key was not refused"
        );
        Ok(())
    })
}

/// The shipped alert rules load in Prometheus (`promtool check rules`) and
/// each alert fires on the series that should fire it, and only then
/// (`promtool test rules`, deploy/prometheus/alerts_test.yml).
#[test]
fn the_alert_rules_load_and_fire_as_their_tests_say() -> anyhow::Result<()> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(dir)
            .output()
            .context("running promtool (the test command installs Debian's prometheus)")?;
        ensure!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The LB with `--metrics` and a VIP serving tcp:80, and the agents' HTTP
/// servers: the LB, its pin path, the VIP and the servers.
fn start_service(topo: &Topology) -> anyhow::Result<(Proc, PathBuf, String, Vec<Proc>)> {
    let vip = topo.segment_address(100).to_string();
    let mut args = FAST_TIMERS.to_vec();
    args.extend([
        "--metrics",
        LB_METRICS,
        "--vip",
        &vip,
        "--service",
        "tcp:80",
    ]);
    let (lb, pin) = topo.start_lb(LB, "lb", &args)?;
    let servers = topo.start_servers(&AGENTS)?;
    Ok((lb, pin, vip, servers))
}

/// `count` short connections from the client to the VIP, none failing.
fn connect(topo: &Topology, vip: &str, count: u32) -> anyhow::Result<()> {
    let target = format!("{vip}:80");
    let out = topo.exec(
        CLIENT,
        "http-probe",
        &["spread", &target, &count.to_string()],
    )?;
    let spread: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(spread["errors"] == 0, "connections failed: {spread}");
    Ok(())
}

/// The page at `/` as headless Chromium renders it after its first fetch
/// of /status.json (Chromium runs in the LB's namespace; a screenshot of
/// the same moment is kept as target/test-output/`name`.png).
fn rendered_page(topo: &Topology, name: &str) -> anyhow::Result<String> {
    let url = format!("http://{LB_METRICS}/");
    let profile = topo.logs.join(format!("chromium-{name}"));
    let output = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-output");
    std::fs::create_dir_all(&output)?;
    let shot = output.join(format!("{name}.png"));
    // Without the background-networking flags Chromium reaches for the
    // internet at every start; the virtual time budget lets the page's
    // fetch finish before the DOM is dumped.
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=3000",
        "--window-size=1000,700",
    ];
    let mut dump: Vec<String> = common.iter().map(|a| a.to_string()).collect();
    dump.push(format!("--user-data-dir={}", profile.display()));
    let mut picture = dump.clone();
    dump.extend(["--dump-dom".to_owned(), url.clone()]);
    picture.extend([format!("--screenshot={}", shot.display()), url]);
    let dump: Vec<&str> = dump.iter().map(String::as_str).collect();
    let picture: Vec<&str> = picture.iter().map(String::as_str).collect();
    let out = topo.exec_program(LB, "chromium", &dump)?;
    topo.exec_program(LB, "chromium", &picture)?;
    println!("screenshot: {}", shot.display());
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The status page in a real browser: a backend that registers appears on
/// it, a draining one shows as draining, a departed one shows its reason.
#[test]
fn the_status_page_shows_backends_as_they_come_drain_and_leave() -> anyhow::Result<()> {
    with_topology(4, Bridge::Flooding, |topo| {
        let (_lb, pin, vip, _servers) = start_service(topo)?;
        let mut agents = topo.spawn_agents(&AGENTS, &["--iface", "eth0", "--vip", &vip])?;
        let registered_at = std::time::Instant::now();
        wait_for(Duration::from_secs(5), POLL, || {
            topo.status(&pin).ok().filter(|s| registered(s).len() == 2)
        })
        .context("the agents did not register")?;
        let (first, second) = (
            topo.host(AGENTS[0]).addr.to_string(),
            topo.host(AGENTS[1]).addr.to_string(),
        );
        let row = |addr: &str, state: &str| {
            format!("class=\"backend\" data-address=\"{addr}\" data-state=\"{state}\"")
        };
        let dom = rendered_page(topo, "status-page-registered")?;
        println!(
            "the page listed both backends {} ms after the agents started",
            registered_at.elapsed().as_millis()
        );
        ensure!(
            dom.contains(&row(&first, "active")) && dom.contains(&row(&second, "active")),
            "the page does not show both backends active: {dom}"
        );

        // Traffic, so that the page has each backend's share of it.
        topo.wait_tables(&pin)?;
        connect(topo, &vip, 200)?;
        agents[0].signal(libc::SIGUSR1);
        topo.wait_backends(&pin, "draining", 1, Duration::from_secs(3))?;
        agents[1].signal(libc::SIGTERM);
        agents[1].wait_exit(Duration::from_secs(3))?;
        wait_for(Duration::from_secs(3), POLL, || {
            topo.status(&pin).ok().filter(|s| registered(s).len() == 1)
        })
        .context("the second agent did not leave")?;
        let dom = rendered_page(topo, "status-page-draining-and-left")?;
        let left = format!(
            "class=\"departed\" data-address=\"{second}\" data-reason=\"LEAVING announcement\""
        );
        ensure!(
            dom.contains(&row(&first, "draining")),
            "the page does not show {first} draining: {dom}"
        );
        ensure!(
            dom.contains(&left),
            "the page does not show {second} left with its reason: {dom}"
        );
        // The draining backend's traffic stays listed; the departed one's
        // went into the service's totals.
        let traffic = |addr: &str| {
            format!(
                "class=\"service-backend\" data-service=\"{vip}:80/tcp\" data-address=\"{addr}\""
            )
        };
        ensure!(
            dom.contains(&traffic(&first)) && !dom.contains(&traffic(&second)),
            "the page does not show {first}'s traffic alone: {dom}"
        );
        Ok(())
    })
}

/// A real Prometheus (Debian's `prometheus`) in the LB's namespace scrapes
/// both binaries every second with the shipped rules. Its API answers the
/// per-backend traffic query: after short connections from a client, each
/// backend's share of the service's new flows is the share its weight asks
/// for (1:3), within 15%. When a backend's service dies, its agent's check
/// announces it DOWN and the `XdpLbBackendDown` alert fires in that
/// Prometheus (after its `for`).
#[test]
fn a_real_prometheus_sees_the_weights_and_fires_the_down_alert() -> anyhow::Result<()> {
    with_topology(4, Bridge::Flooding, |topo| {
        let (_lb, pin, vip, mut servers) = start_service(topo)?;
        let mut agents = Vec::new();
        for (host, weight) in AGENTS.into_iter().zip(["100", "300"]) {
            let metrics = format!("{}:9101", topo.host(host).addr);
            let mut args: Vec<String> = ["--iface", "eth0", "--metrics", &metrics]
                .into_iter()
                .chain(["--vip", &vip, "--weight", weight])
                .map(str::to_owned)
                .collect();
            args.extend(check_args("http://127.0.0.1:80/"));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            agents.push(topo.spawn(host, &format!("agent{host}"), "backend-agent", &args)?);
        }
        topo.wait_backends(&pin, "active", 2, Duration::from_secs(5))?;
        topo.wait_tables(&pin)?;

        let rules = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/prometheus/alerts.yml"
        );
        let agent_targets: Vec<String> = AGENTS
            .iter()
            .map(|&h| format!("'{}:9101'", topo.host(h).addr))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{rules}']\n\
             scrape_configs:\n  - job_name: lb\n    static_configs: [{{targets: ['{LB_METRICS}']}}]\n\
             \x20 - job_name: agent\n    static_configs: [{{targets: [{}]}}]\n",
            agent_targets.join(", ")
        );
        let config_file = topo.logs.join("prometheus.yml");
        std::fs::write(&config_file, config)?;
        let data = topo.logs.join("prometheus-data");
        let _prometheus = topo.spawn_program(
            LB,
            "prometheus",
            "prometheus",
            &[
                &format!("--config.file={}", config_file.display()),
                &format!("--storage.tsdb.path={}", data.display()),
                "--web.listen-address=127.0.0.1:9090",
            ],
        )?;
        let api = |path: &str| -> Option<serde_json::Value> {
            let url = format!("http://127.0.0.1:9090/api/v1/{path}");
            let out = topo.exec_program(LB, "curl", &["-sf", &url]).ok()?;
            serde_json::from_slice(&out.stdout).ok()
        };
        // Every target scraped and up.
        wait_for(Duration::from_secs(20), Duration::from_millis(200), || {
            let targets = api("targets")?;
            let active = targets["data"]["activeTargets"].as_array()?;
            (active.len() == 3 && active.iter().all(|t| t["health"] == "up")).then_some(())
        })
        .context("Prometheus did not scrape the LB and both agents")?;

        // Short connections, then each backend's share of the new flows
        // beside the share its weight asks for, both from Prometheus.
        let connections = 2000;
        connect(topo, &vip, connections)?;
        let query = |promql: &str| -> Option<Vec<(String, f64)>> {
            let url = "http://127.0.0.1:9090/api/v1/query";
            let form = format!("query={promql}");
            let out = topo
                .exec_program(LB, "curl", &["-sf", "--data-urlencode", &form, url])
                .ok()?;
            let answer: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            answer["data"]["result"]
                .as_array()?
                .iter()
                .map(|r| {
                    let address = r["metric"]["address"].as_str().unwrap_or("").to_owned();
                    Some((address, r["value"][1].as_str()?.parse().ok()?))
                })
                .collect()
        };
        let share = "xdp_lb_backend_new_flows_total / on (instance, vip, port, proto) group_left \
                     sum by (instance, vip, port, proto) (xdp_lb_backend_new_flows_total)";
        let ratios = format!("({share}) / xdp_lb_backend_weight_share");
        // Until a scrape after the last connection has the whole count.
        let scraped = format!("sum(xdp_lb_backend_new_flows_total) >= {connections}");
        wait_for(Duration::from_secs(10), Duration::from_millis(250), || {
            query(&scraped).filter(|r| r.len() == 1)
        })
        .context("Prometheus did not scrape the connections' new flows")?;
        let shares = query(share).context("the share query")?;
        let ratios = query(&ratios).context("the ratio query")?;
        println!(
            "Prometheus: shares of {connections} new flows {shares:?} (weights 1:3); share / weight share {ratios:?}"
        );
        ensure!(
            ratios.len() == 2 && ratios.iter().all(|(_, r)| (r - 1.0).abs() <= 0.15),
            "the shares are not those of the weights within 15%: {ratios:?}"
        );

        let dead = topo.host(AGENTS[0]).addr.to_string();
        servers.remove(0); // killed on drop
        let killed = std::time::Instant::now();
        let firing = wait_for(Duration::from_secs(60), Duration::from_millis(250), || {
            let alerts = api("alerts")?;
            alerts["data"]["alerts"].as_array()?.iter().find_map(|a| {
                (a["labels"]["alertname"] == "XdpLbBackendDown"
                    && a["labels"]["address"] == dead.as_str()
                    && a["state"] == "firing")
                    .then(|| a.clone())
            })
        })
        .context("XdpLbBackendDown did not fire in Prometheus")?;
        println!(
            "XdpLbBackendDown firing in Prometheus {} ms after {dead}'s service was killed (the rule's for: 30s): {}",
            killed.elapsed().as_millis(),
            firing["annotations"]["summary"]
        );
        drop(agents);
        Ok(())
    })
}
