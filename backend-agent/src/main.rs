//! backend-agent: registers this host with every LB that queries the group
//! (protocol §5.7). Answers each query with a suppressible membership
//! report and one announcement to the LB; sends LEAVING on SIGINT/SIGTERM.
//! SIGUSR1 switches it to DRAINING (no new flows), SIGUSR2 back. SIGQUIT
//! exits keeping state for the next agent (handover.rs).
mod agent;
mod args;
mod checker;
mod decap;
mod handover;
mod health;
mod membership;
mod metrics;
mod schedule;
mod start;
mod state;

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use lb_host::{
    cli::read_key_file,
    kernel,
    metrics_server::{MetricsEndpoint, StatusPage},
    service_manager, system,
};
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{Instant, sleep_until},
};
use tracing::{error, info};

use crate::{
    args::{Args, check_timeout},
    checker::{next_checks, start_checks},
    decap::Decap,
    start::set_up_vip,
};

/// The status page `--metrics` serves at `/`: it reads `/status.json`,
/// what `--status` shows, every second.
const STATUS_PAGE: &str = include_str!("status_page.html");

async fn run(args: Args, passed: Vec<(String, std::os::fd::OwnedFd)>) -> anyhow::Result<()> {
    if let Some(what) = args.generate {
        return lb_host::cli::generate::<Args>(what);
    }
    if args.check_kernel {
        print!("{}", kernel::report(&kernel::release()?)?);
        return Ok(kernel::require(kernel::User::Agent)?);
    }
    if args.status {
        print!(
            "{}",
            state::read(args.iface())
                .map_err(anyhow::Error::msg)?
                .render_text()
        );
        return Ok(());
    }
    let check_timeout = check_timeout(&args)?;
    let key = args
        .key_file
        .as_deref()
        .map(read_key_file)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    system::require_root("backend-agent")?;
    kernel::require(kernel::User::Agent)?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigusr1 =
        signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    let mut sigusr2 =
        signal(SignalKind::user_defined2()).context("installing the SIGUSR2 handler")?;
    let mut sigquit = signal(SignalKind::quit()).context("installing the SIGQUIT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut check_results = start_checks(args.checks.clone(), args.check_interval, check_timeout);
    let (vip, iface) = (args.vip, args.iface().to_owned());
    // Bound first: a port in use is an error before the agent joins.
    let metrics_endpoint = MetricsEndpoint::bind_flag(args.metrics)?;
    let inherited = handover::take(args.iface(), passed);
    let kept_vip = inherited.record.as_ref().and_then(|r| r.vip.clone());
    let mut agent = start::start(args, key, inherited)?;
    if let Some(endpoint) = metrics_endpoint {
        let decap = agent
            .decap
            .as_ref()
            .map(Decap::counters_handle)
            .transpose()?;
        let metrics = agent.metrics.clone();
        info!(addr = %endpoint.local_addr()?, "serving Prometheus metrics at /metrics and the status page at /");
        let iface = iface.clone();
        let json = move || {
            let state = state::read(&iface)?;
            serde_json::to_string(&state).map_err(|e| e.to_string())
        };
        endpoint.serve(
            move || metrics.render(decap.as_ref()),
            Some(StatusPage {
                html: STATUS_PAGE,
                json: Box::new(json),
            }),
        );
    }
    let mut vip = vip
        .map(|vip| set_up_vip(vip, &iface, kept_vip.as_ref()))
        .transpose()?;
    let keep_state = loop {
        // With nothing pending, wake up only for packets and signals.
        let deadline = agent
            .schedule
            .next_deadline()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            received = agent.receive() => received?,
            _ = sleep_until(deadline) => agent.send_due(),
            Some(result) = next_checks(&mut check_results) => agent.on_checks(result),
            _ = sigusr1.recv() => agent.set_draining(true),
            _ = sigusr2.recv() => agent.set_draining(false),
            _ = sighup.recv() => agent.reload(),
            _ = sigterm.recv() => break false,
            _ = sigint.recv() => break false,
            _ = sigquit.recv() => break true,
        }
    };
    state::remove(agent.args.iface());
    if keep_state {
        match handover::hand_over(&mut agent, vip.as_mut()) {
            Ok(()) => {
                info!(
                    "exiting keeping state (SIGQUIT): the service manager holds the group membership; the VIP and the decapsulation program stay for the next agent"
                );
                return Ok(());
            }
            Err(e) => error!("{e:#}; leaving as on SIGTERM"),
        }
    }
    agent.leave();
    info!("left the group; exiting");
    Ok(())
}

fn main() -> ExitCode {
    lb_host::cli::main_with_settings_file(|args: Args| {
        // Before any thread starts: taking them edits the environment.
        let passed = service_manager::take_passed();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(run(args, passed))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_subcommand_and_flag_has_a_help_line() {
        assert_eq!(
            lb_host::cli::undocumented::<super::Args>(),
            Vec::<String>::new()
        );
    }
}
