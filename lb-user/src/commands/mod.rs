//! One module per subcommand of lb-user.

pub mod check_kernel;
pub mod run;
pub mod status;
pub mod stop;
