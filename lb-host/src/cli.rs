//! The `main` shared by the project's binaries: logging to stderr, argument
//! parsing whose errors are one line, and one `error: ...` line on failure.
use std::{
    io::IsTerminal,
    net::{IpAddr, Ipv4Addr},
    process::ExitCode,
    time::Duration,
};

/// Parses `T` from the command line and runs `body` with it.
pub fn main_with<T: clap::Parser>(body: impl FnOnce(T) -> anyhow::Result<()>) -> ExitCode {
    main_with_args(std::env::args_os().collect(), body)
}

/// As [`main_with`], for a command with a `--config FILE` of settings
/// (TOML, each key a long flag: `weight = 200`, `check = ["tcp:80"]`,
/// `vip = "10.0.0.100"`): the file's settings count as flags given before
/// the command line's, so a flag on the command line overrides the file
/// (the command must set `args_override_self`; repeatable flags add up).
pub fn main_with_settings_file<T: clap::Parser>(
    body: impl FnOnce(T) -> anyhow::Result<()>,
) -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match with_settings_file::<T>(argv) {
        Ok(argv) => main_with_args(argv, body),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The command line and its `--config FILE` parsed again (a reload): the
/// file may have changed since the start. An error is one line.
pub fn reparse_with_settings_file<T: clap::Parser>() -> Result<T, String> {
    let argv = with_settings_file::<T>(std::env::args_os().collect())?;
    T::try_parse_from(argv).map_err(|e| first_paragraph(&e.render().to_string()))
}

/// `argv` with the settings of its `--config FILE`, if any, inserted as
/// flags right after the program name.
fn with_settings_file<T: clap::CommandFactory>(
    argv: Vec<std::ffi::OsString>,
) -> Result<Vec<std::ffi::OsString>, String> {
    let path = argv.iter().enumerate().find_map(|(i, a)| {
        let a = a.to_str()?;
        match a.strip_prefix("--config") {
            Some("") => argv.get(i + 1).cloned(),
            Some(rest) => rest.strip_prefix('=').map(Into::into),
            None => None,
        }
    });
    let Some(path) = path else {
        return Ok(argv);
    };
    let shown = std::path::Path::new(&path).display().to_string();
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading --config {shown}: {e}"))?;
    let settings = settings_as_flags::<T>(&text).map_err(|e| format!("--config {shown}: {e}"))?;
    let mut out = Vec::with_capacity(argv.len() + settings.len());
    out.extend(argv.first().cloned());
    out.extend(settings.into_iter().map(Into::into));
    out.extend(argv.into_iter().skip(1));
    Ok(out)
}

/// A TOML table of settings as the flags of `T` they stand for.
fn settings_as_flags<T: clap::CommandFactory>(text: &str) -> Result<Vec<String>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        e.message().lines().next().unwrap_or("not TOML").to_owned()
    })?;
    let command = T::command();
    let mut flags = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        let known = command
            .get_arguments()
            .any(|a| a.get_long() == Some(flag.as_str()) && flag != "config");
        if !known {
            return Err(format!("unknown setting {key:?}"));
        }
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(n) => Ok(n.to_string()),
            other => Err(format!(
                "{key}: {} is neither a string nor a number",
                other.type_str()
            )),
        };
        match value {
            toml::Value::Boolean(true) => flags.push(format!("--{flag}")),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                for item in &items {
                    flags.push(format!("--{flag}"));
                    flags.push(scalar(item)?);
                }
            }
            other => {
                flags.push(format!("--{flag}"));
                flags.push(scalar(&other)?);
            }
        }
    }
    Ok(flags)
}

fn main_with_args<T: clap::Parser>(
    argv: Vec<std::ffi::OsString>,
    body: impl FnOnce(T) -> anyhow::Result<()>,
) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = match T::try_parse_from(argv) {
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

/// An announcement port: a non-system port (protocol §3).
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

/// A multicast group of either family (protocol §9): IPv4 in 224.0.0.0/4,
/// or IPv6 of link-local scope or wider that no protocol already owns
/// (not the all-nodes, all-routers, MLDv2 or snooper groups).
pub fn parse_any_group(s: &str) -> Result<IpAddr, String> {
    let addr: IpAddr = s
        .parse()
        .map_err(|_| format!("{s:?} is neither an IPv4 nor an IPv6 address"))?;
    let IpAddr::V6(v6) = addr else {
        return parse_group(s).map(IpAddr::V4);
    };
    if !v6.is_multicast() {
        return Err(format!("{v6} is not a multicast address (ff00::/8)"));
    }
    let scope = v6.segments()[0] & 0xf;
    if scope < 2 {
        return Err(format!(
            "{v6} has interface-local or reserved scope; use a site-local group such as ff15::4c42"
        ));
    }
    let reserved = [1, 2, 0x16, 0x6a];
    if v6.segments()[1..7] == [0; 6] && reserved.contains(&v6.segments()[7]) {
        return Err(format!(
            "{v6} belongs to another protocol (all nodes, all routers, MLDv2 or snoopers); use a group of your own such as ff15::4c42"
        ));
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

    #[test]
    fn groups_of_either_family() {
        assert_eq!(
            parse_any_group("239.192.0.1"),
            Ok("239.192.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_any_group("ff15::4c42"),
            Ok("ff15::4c42".parse().unwrap())
        );
        assert_eq!(
            parse_any_group("ff02::4c42"),
            Ok("ff02::4c42".parse().unwrap())
        );
        for (bad, why) in [
            ("10.0.0.1", "not a multicast address"),
            ("2001:db8::1", "not a multicast address"),
            ("fe80::1", "not a multicast address"),
            ("ff01::4c42", "interface-local"),
            ("ff02::1", "another protocol"),
            ("ff02::16", "another protocol"),
            ("ff05::2", "another protocol"),
            ("group", "neither an IPv4 nor an IPv6 address"),
        ] {
            let got = parse_any_group(bad).unwrap_err();
            assert!(got.contains(why), "{bad}: {got}");
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

/// The subcommands and arguments of the CLI `T` defines (all the way
/// down) that have no help line: `--help`, the man page and the
/// completions would show them bare.
pub fn undocumented<T: clap::CommandFactory>() -> Vec<String> {
    let mut missing = Vec::new();
    collect_undocumented(&T::command(), &mut missing);
    missing
}

fn collect_undocumented(command: &clap::Command, missing: &mut Vec<String>) {
    let name = command.get_name();
    for arg in command.get_arguments() {
        // clap's own --help and --version carry their text.
        let id = arg.get_id().as_str();
        if arg.get_help().is_none() && id != "help" && id != "version" {
            missing.push(format!("{name} {id}"));
        }
    }
    for sub in command.get_subcommands() {
        if sub.get_about().is_none() {
            missing.push(format!("{name} {}", sub.get_name()));
        }
        collect_undocumented(sub, missing);
    }
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

#[cfg(test)]
mod settings_tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    #[command(args_override_self = true)]
    struct Demo {
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        #[arg(long)]
        iface: String,
        #[arg(long, default_value_t = 100)]
        weight: u16,
        #[arg(long)]
        check: Vec<String>,
        #[arg(long)]
        status: bool,
    }

    fn parse(name: &str, file: &str, cli: &[&str]) -> Result<Demo, String> {
        let dir = std::env::temp_dir().join(format!("lb-host-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, file).map_err(|e| e.to_string())?;
        let mut argv: Vec<std::ffi::OsString> = vec!["demo".into(), "--config".into(), path.into()];
        argv.extend(cli.iter().map(Into::into));
        let argv = with_settings_file::<Demo>(argv)?;
        Demo::try_parse_from(argv).map_err(|e| e.to_string())
    }

    #[test]
    fn a_settings_file_stands_for_flags_the_command_line_overrides() {
        let d = parse(
            "full",
            "iface = \"eth1\"\nweight = 200\ncheck = [\"tcp:80\"]\nstatus = false\n",
            &["--weight", "300", "--check", "tcp:81"],
        )
        .unwrap();
        assert_eq!((d.iface.as_str(), d.weight, d.status), ("eth1", 300, false));
        assert_eq!(d.check, vec!["tcp:80", "tcp:81"]);
        let d = parse("iface", "iface = \"eth1\"\n", &["--iface", "eth2"]).unwrap();
        assert_eq!(d.iface, "eth2");
        let unknown = parse("unknown", "colour = \"blue\"\n", &[]).unwrap_err();
        assert!(unknown.contains("unknown setting \"colour\""), "{unknown}");
        assert!(parse("broken", "weight = [\n", &[]).is_err(), "not TOML");
        let float = parse("float", "iface = 1.5\n", &[]).unwrap_err();
        assert!(float.contains("neither a string nor a number"), "{float}");
    }
}
