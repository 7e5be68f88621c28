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

/// Reads a key file: 32 hexadecimal digits (a 128-bit SipHash key),
/// surrounding whitespace allowed.
pub fn read_key_file(path: &std::path::Path) -> Result<[u8; 16], String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading key file {}: {e}", path.display()))?;
    parse_key(text.trim()).map_err(|e| format!("key file {}: {e}", path.display()))
}

/// 32 hexadecimal digits to a 128-bit key.
pub fn parse_key(hex: &str) -> Result<[u8; 16], String> {
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "expected 32 hexadecimal digits, found {} characters",
            hex.chars().count()
        ));
    }
    let mut key = [0u8; 16];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(key)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_32_hex_digits() {
        assert_eq!(
            parse_key("000102030405060708090a0b0c0d0e0F"),
            Ok([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15])
        );
        for bad in [
            "",
            "0011",
            "000102030405060708090a0b0c0d0e0g",
            "000102030405060708090a0b0c0d0e0f00",
            "é00102030405060708090a0b0c0d0e0f",
        ] {
            assert!(parse_key(bad).is_err(), "{bad:?}");
        }
    }
}

/// What `generate` writes: the man page or a shell's completion script.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Generated {
    Man,
    Bash,
    Zsh,
    Fish,
}

/// Writes the man page (roff) or a completion script of the CLI `T`
/// defines to stdout: generated from the same definitions as the parser,
/// so they never disagree with it.
pub fn generate<T: clap::CommandFactory>(what: Generated) -> anyhow::Result<()> {
    let mut command = T::command();
    let name = command.get_name().to_owned();
    let mut out = std::io::stdout().lock();
    let shell = match what {
        Generated::Man => return Ok(clap_mangen::Man::new(command).render(&mut out)?),
        Generated::Bash => clap_complete::Shell::Bash,
        Generated::Zsh => clap_complete::Shell::Zsh,
        Generated::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut command, name, &mut out);
    Ok(())
}
