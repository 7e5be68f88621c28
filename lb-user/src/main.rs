//! lb-user: loads the XDP program, runs the registration control plane and
//! shows the status of a running instance.

mod commands;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use commands::{
    check_kernel::check_kernel,
    run::{RunArgs, run},
    status,
    stop::stop,
};
use lb_host::cli::parse_duration;

const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/xdp-lb";

#[derive(Parser)]
#[command(
    version,
    about = "XDP layer-4 load balancer with zero-configuration backend registration"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach the XDP program to an interface and run the control plane.
    Run(Box<RunArgs>),
    /// Detach the XDP program and remove every pin of an instance that is
    /// not running (one killed with SIGKILL keeps forwarding until this).
    Stop {
        /// Directory on a bpffs where `run` pinned its maps.
        #[arg(long, default_value = DEFAULT_PIN_PATH)]
        pin_path: PathBuf,
    },
    /// Write the man page or a shell completion script to stdout.
    Generate {
        /// What to write.
        #[arg(value_enum)]
        what: lb_host::cli::Generated,
    },
    /// Print the kernel features lb-user and backend-agent rely on, each
    /// with the Linux version that brought it and whether this kernel has
    /// it; fails if lb-user lacks one.
    CheckKernel,
    /// Show the registered backends of a running instance.
    Status {
        /// Directory on a bpffs where `run` pinned its maps.
        #[arg(long, default_value = DEFAULT_PIN_PATH)]
        pin_path: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Redraw the table in place every `--interval` until Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// How often `--watch` redraws.
        #[arg(long, default_value = "1s", value_parser = parse_duration, requires = "watch")]
        interval: Duration,
    },
}

fn main() -> ExitCode {
    lb_host::cli::main_with(|cli: Cli| match cli.command {
        Command::Run(args) => run(&args),
        Command::Status {
            pin_path,
            json,
            watch,
            interval,
        } => {
            if watch {
                status::watch_status(&pin_path, interval)
            } else {
                status::show_status(&pin_path, json)
            }
        }
        Command::Stop { pin_path } => stop(&pin_path),
        Command::Generate { what } => lb_host::cli::generate::<Cli>(what),
        Command::CheckKernel => check_kernel(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_subcommand_and_flag_has_a_help_line() {
        assert_eq!(
            lb_host::cli::undocumented::<super::Cli>(),
            Vec::<String>::new()
        );
    }
}
