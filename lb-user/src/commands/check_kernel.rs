//! `lb-user check-kernel`: the kernel features both binaries rely on.

use lb_host::kernel;

/// Prints the report; fails if lb-user lacks a feature.
pub fn check_kernel() -> anyhow::Result<()> {
    print!("{}", kernel::report(&kernel::release()?)?);
    Ok(kernel::require(kernel::User::Lb)?)
}
