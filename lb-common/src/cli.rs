//! The `main` shared by the project's binaries: logging to stderr, argument
//! parsing whose errors are one line, and one `error: ...` line on failure.
use std::{io::IsTerminal, net::Ipv4Addr, process::ExitCode, time::Duration};

/// Parses `T` from the command line and runs `body` with it.
pub fn main_with<T: clap::Parser>(body: impl FnOnce(T) -> anyhow::Result<()>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = match T::try_parse() {
        Ok(args) => args,
        // --help and --version print in full, to stdout.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}", first_paragraph(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    match body(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A duration in human form (`500ms`, `2s`), above zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (write durations like 500ms or 2s)"))?;
    if d.is_zero() {
        return Err("must be above zero".into());
    }
    Ok(d)
}

/// An announcement port: a non-system port (SPEC 3).
pub fn parse_port(s: &str) -> Result<u16, String> {
    let port: u16 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a port number"))?;
    if port < 1024 {
        return Err(format!("{port} is a system port; use a port >= 1024"));
    }
    Ok(port)
}

/// A multicast group address.
pub fn parse_group(s: &str) -> Result<Ipv4Addr, String> {
    let addr: Ipv4Addr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address"))?;
    if !addr.is_multicast() {
        return Err(format!("{addr} is not a multicast address (224.0.0.0/4)"));
    }
    Ok(addr)
}

/// Clap's message up to its usage lines, on one line.
fn first_paragraph(rendered: &str) -> String {
    let words: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage:"))
        .map(str::trim)
        .collect();
    if words.is_empty() {
        "error: invalid arguments".to_owned()
    } else {
        words.join(" ")
    }
}
