//! `lb-user status`: the pinned maps of an instance, as a table, JSON or
//! a table redrawn in place.

use std::{path::Path, time::Duration};

use anyhow::Context;
use lb_user::{maps::LbMaps, status, system};
use tokio::signal::unix::{SignalKind, signal};

/// One reading, as a table or JSON.
pub fn show_status(pin_path: &Path, json: bool) -> anyhow::Result<()> {
    system::require_root("lb-user status")?;
    let maps = LbMaps::open_pinned(pin_path)?;
    let report = status::read(&maps, system::monotonic_ns())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render_text());
    }
    Ok(())
}

/// `status --watch`: the table redrawn in place (cursor home, clear to the
/// end) every `interval`, until Ctrl-C, which ends it with status 0.
pub fn watch_status(pin_path: &Path, interval: Duration) -> anyhow::Result<()> {
    system::require_root("lb-user status")?;
    let maps = LbMaps::open_pinned(pin_path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut sigint =
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let report = status::read(&maps, system::monotonic_ns())?;
                    print!(
                        "\x1b[H\x1b[J{} (every {}, Ctrl-C to stop)\n{}",
                        pin_path.display(),
                        humantime::format_duration(interval),
                        report.render_text()
                    );
                    std::io::Write::flush(&mut std::io::stdout())?;
                }
                _ = sigint.recv() => break,
            }
        }
        println!();
        anyhow::Ok(())
    })
}
