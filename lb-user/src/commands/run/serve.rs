//! Serving a started instance: the control loop, XDP's log records and
//! the signals (SIGHUP reloads keys, SIGQUIT exits keeping state).

use std::path::PathBuf;

use anyhow::Context;
use lb_user::{control::Controller, system};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};
use tracing::{info, warn};

use super::{read_keys, start::Running};

/// SIGHUP: the key files read again and installed at once (the current and
/// the next key during a rotation); a file that cannot be read keeps the
/// keys as they were.
fn reload_keys(controller: &mut Controller, key_files: &[PathBuf]) {
    if key_files.is_empty() {
        warn!("SIGHUP: no --key-file to read again (keys are turned on only at start)");
        return;
    }
    match read_keys(key_files).and_then(|keys| Ok(controller.set_keys(&keys)?)) {
        Ok(()) => info!(
            keys = key_files.len(),
            "SIGHUP: announcement keys read again and in use"
        ),
        Err(e) => warn!("SIGHUP: keys not changed: {e:#}"),
    }
}

/// Runs the control loop until SIGINT or SIGTERM, and forwards XDP's log
/// records as they arrive.
pub(super) fn serve(running: Running, key_files: &[PathBuf]) -> anyhow::Result<()> {
    let Running {
        mut controller,
        tick,
        xdp_log,
        mut vips,
        mut pins,
        ..
    } = running;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let keep_state = runtime.block_on(async {
        let mut sigterm =
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut sigint =
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut sigquit = signal(SignalKind::quit()).context("installing the SIGQUIT handler")?;
        let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        // SAFETY: the logger owns its ring's fd and never closes or replaces
        // it while registered; flushing only reads from it.
        let mut xdp_log = unsafe { AsyncFd::register_with_interest(xdp_log, Interest::READABLE) }
            .context("watching the XDP program's log ring")?;
        let mut tick = tokio::time::interval(tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let keep_state = loop {
            tokio::select! {
                _ = tick.tick() => controller.step(system::monotonic_ns())?,
                ready = xdp_log.readable_mut() => {
                    let mut guard = ready.context("reading the XDP program's log ring")?;
                    // Cleared before draining: a record written meanwhile
                    // wakes us again instead of waiting for the next one.
                    guard.clear_ready();
                    guard.get_inner_mut().flush();
                }
                _ = sigterm.recv() => break false,
                _ = sigint.recv() => break false,
                _ = sigquit.recv() => break true,
                _ = sighup.recv() => reload_keys(&mut controller, key_files),
            }
        };
        // Records written since the last wake-up.
        xdp_log.get_mut().flush();
        anyhow::Ok(keep_state)
    })?;
    if keep_state {
        // A restart: XDP stays attached through the pinned link and goes on
        // forwarding with the pinned maps; the next `run` adopts them all.
        pins.armed = false;
        vips.iter_mut().for_each(system::AddedAddress::keep);
        controller.keep_state();
        info!(
            "exiting and keeping state (SIGQUIT): XDP stays attached and forwarding, the pins, VIPs and settings stay for the next `run` with this --pin-path"
        );
    } else {
        info!("stopping: detaching XDP and removing the pins");
    }
    // The VIPs go before XDP: a VIP left on the interface without XDP
    // would have the LB's own stack reset the clients' connections.
    drop(vips);
    drop(pins);
    Ok(())
}
