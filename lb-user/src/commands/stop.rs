//! `lb-user stop`: detach and unpin an instance that is not running.

use std::path::Path;

use anyhow::bail;
use lb_user::{
    instance::{self, InstanceLock},
    next_hop, system,
};

/// Removes every pin (detaching XDP) and restores what `run` changed.
pub fn stop(pin_path: &Path) -> anyhow::Result<()> {
    system::require_root("lb-user stop")?;
    let _lock = InstanceLock::acquire(pin_path)?;
    let removed = instance::remove_pins(pin_path);
    if removed.is_empty() {
        bail!("nothing is pinned at {}", pin_path.display());
    }
    println!(
        "removed {} pins from {}; XDP detached",
        removed.len(),
        pin_path.display()
    );
    for (sysctl, value) in next_hop::restore_recorded_forwarding(pin_path) {
        println!("{sysctl} restored to {value}");
    }
    Ok(())
}
