//! Types and constants shared by the XDP program and userspace.
//!
//! Every map value is `#[repr(C)]` with explicit padding fields, so the kernel
//! and userspace agree on the layout byte for byte; sizes are checked at
//! compile time.
#![cfg_attr(not(test), no_std)]

pub mod addr;
mod auth;
mod backends;
mod clock;
mod counters;
mod decap;
#[cfg(test)]
mod docs_tables;
mod events;
mod flows;
mod forwarding;
mod groups;
pub mod mld;
#[cfg(feature = "user")]
mod pod;
mod program;
mod rows;
mod services;
pub mod siphash;
pub mod wire;

pub use auth::*;
pub use backends::*;
pub use clock::*;
pub use counters::*;
pub use decap::*;
pub use events::*;
pub use flows::*;
pub use forwarding::*;
pub use groups::*;
pub use program::*;
pub use rows::*;
pub use services::*;
