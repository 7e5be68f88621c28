//! Bad input ends with one clear `error:` line and a non-zero exit, never a panic.
use std::{process::Command, time::Duration};

use lb_tests::bin;

struct Case {
    binary: &'static str,
    args: &'static [&'static str],
    /// Run as an unprivileged user.
    unprivileged: bool,
    expect: &'static str,
}

const fn case(binary: &'static str, args: &'static [&'static str], expect: &'static str) -> Case {
    Case {
        binary,
        args,
        unprivileged: false,
        expect,
    }
}

const CASES: &[Case] = &[
    case(
        "lb-user",
        &["run", "--iface", "xlb-nosuchif"],
        "does not exist",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--port", "80"],
        "system port",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--port", "70000"],
        "not a port number",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--group", "239.1.2"],
        "neither an IPv4 nor an IPv6 address",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--group", "10.0.0.1"],
        "not a multicast address",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--group", "239.1.1.1:99"],
        "system port",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--timeout", "2 fortnights"],
        "durations like",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--query-interval", "0s"],
        "above zero",
    ),
    case(
        "lb-user",
        &[
            "run",
            "--iface",
            "lo",
            "--query-interval",
            "1s",
            "--max-response-time",
            "1s",
        ],
        "must be below",
    ),
    case(
        "lb-user",
        &[
            "run",
            "--iface",
            "lo",
            "--group",
            "239.1.1.1:3000",
            "--group",
            "239.1.1.2:3000",
        ],
        "share an address or a port",
    ),
    case(
        "lb-user",
        &[
            "run",
            "--iface",
            "lo",
            "--pin-path",
            "/tmp/xlb-not-bpffs/pins",
        ],
        "not on a bpf filesystem",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--key-file", "/etc/hostname"],
        "expected 32 hexadecimal digits",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--key-file", "/nonexistent/k"],
        "reading key file",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--allow", "10.0.0.1/8"],
        "host bits",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--allow", "2001:db8::1/32"],
        "did you mean 2001:db8::/32",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--query-version", "4"],
        "--query-version",
    ),
    case(
        "backend-agent",
        &["--iface", "lo", "--check", "udp:53"],
        "not a check",
    ),
    case(
        "backend-agent",
        &["--status", "--iface", "xlb-noagent"],
        "no agent is running on xlb-noagent",
    ),
    case(
        "backend-agent",
        &["--iface", "lo", "--check", "tcp:0"],
        "not a port",
    ),
    case(
        "backend-agent",
        &["--iface", "lo", "--check", "exec:"],
        "needs a command",
    ),
    case(
        "backend-agent",
        &[
            "--iface",
            "lo",
            "--check",
            "tcp:80",
            "--check-timeout",
            "2s",
        ],
        "must be below --check-interval",
    ),
    case(
        "backend-agent",
        &["--iface", "lo", "--check", "tcp:80", "--rise", "0"],
        "--rise",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--xdp-mode", "native"],
        "--xdp-mode",
    ),
    case(
        "backend-agent",
        &["--iface", "lo", "--key-file", "/etc/hostname"],
        "expected 32 hexadecimal digits",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--bogus-flag"],
        "unexpected argument",
    ),
    case(
        "lb-user",
        &["status", "--pin-path", "/sys/fs/bpf/xlb-no-such-instance"],
        "is `lb-user run` running",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--config", "/nonexistent/xlb.toml"],
        "reading /nonexistent/xlb.toml",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--config", "/etc/hostname"],
        "config file",
    ),
    case(
        "lb-user",
        &[
            "run",
            "--iface",
            "lo",
            "--config",
            "/etc/hostname",
            "--group",
            "239.1.1.1",
        ],
        "cannot be used with",
    ),
    case(
        "lb-user",
        &[
            "run",
            "--iface",
            "lo",
            "--vip",
            "10.0.0.1",
            "--service",
            "sctp:80",
        ],
        "not tcp or udp",
    ),
    case(
        "lb-user",
        &[
            "run",
            "--iface",
            "lo",
            "--vip",
            "10.0.0.1",
            "--service",
            "tcp:0",
        ],
        "not a port number",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--vip", "10.0.0.1"],
        "--service",
    ),
    case(
        "lb-user",
        &[
            "run",
            "--iface",
            "lo",
            "--vip",
            "10.0.0.1",
            "--service",
            "tcp:80",
            "--maglev-size",
            "2097169",
        ],
        "largest table",
    ),
    case(
        "lb-user",
        &[
            "run",
            "--iface",
            "lo",
            "--vip",
            "10.0.0.1",
            "--service",
            "tcp:80",
            "--maglev-size",
            "1000",
        ],
        "not a prime",
    ),
    case(
        "backend-agent",
        &["--iface", "lo", "--vip", "10.0.0"],
        "--vip",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--metrics", "127.0.0.1"],
        "--metrics",
    ),
    case(
        "backend-agent",
        &["--iface", "lo", "--metrics", "localhost:http"],
        "--metrics",
    ),
    Case {
        binary: "lb-user",
        args: &["run", "--iface", "lo"],
        unprivileged: true,
        expect: "needs root",
    },
    Case {
        binary: "lb-user",
        args: &["status"],
        unprivileged: true,
        expect: "needs root",
    },
    case(
        "backend-agent",
        &["--iface", "xlb-nosuchif"],
        "does not exist",
    ),
    case(
        "backend-agent",
        &["--iface", "lo", "--port", "80"],
        "system port",
    ),
    case(
        "backend-agent",
        &["--iface", "lo", "--group", "1.2.3.4"],
        "not a multicast address",
    ),
    case(
        "backend-agent",
        &["--iface", "lo", "--weight", "70000"],
        "--weight",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--group", "ff15::4c42"],
        "no global or unique-local IPv6 address",
    ),
    case(
        "lb-user",
        &[
            "run",
            "--iface",
            "lo",
            "--vip",
            "2001:db8::100",
            "--service",
            "tcp:80",
        ],
        "VIP 2001:db8::100: interface \"lo\" has no global or unique-local IPv6 address",
    ),
    case(
        "lb-user",
        &[
            "run",
            "--iface",
            "lo",
            "--vip",
            "fe80::100",
            "--service",
            "tcp:80",
        ],
        "not a unicast address a client can reach",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--group", "ff01::4c42"],
        "interface-local",
    ),
    case(
        "lb-user",
        &["run", "--iface", "lo", "--group", "[ff15::4c42]:80"],
        "system port",
    ),
    case(
        "backend-agent",
        &["--iface", "lo", "--group", "ff15::4c42"],
        "no global or unique-local IPv6 address",
    ),
    case(
        "backend-agent",
        &["--iface", "lo", "--group", "ff02::16"],
        "another protocol",
    ),
    Case {
        binary: "backend-agent",
        args: &["--iface", "lo"],
        unprivileged: true,
        expect: "needs root",
    },
];

#[test]
fn bad_input_is_one_clear_line_and_a_nonzero_exit() {
    for c in CASES {
        let program = bin(c.binary);
        let mut cmd = if c.unprivileged {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&program);
            cmd
        } else {
            Command::new(&program)
        };
        let out = output_within(cmd.args(c.args), Duration::from_secs(10));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let what = format!("{} {:?}", c.binary, c.args);
        assert!(!out.status.success(), "{what}: exited 0");
        assert!(!stderr.contains("panicked"), "{what}: panicked: {stderr}");
        let lines: Vec<&str> = stderr.trim_end().lines().collect();
        assert_eq!(lines.len(), 1, "{what}: expected one line, got: {stderr}");
        assert!(lines[0].starts_with("error:"), "{what}: {stderr}");
        assert!(
            lines[0].contains(c.expect),
            "{what}: expected {:?} in: {stderr}",
            c.expect
        );
        println!("ok: {what}: {}", lines[0]);
    }
}

/// Runs `cmd` to completion; bad input must end it quickly, so one that
/// still runs after `limit` (input wrongly accepted) is killed and fails
/// the test instead of hanging it.
fn output_within(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the binary");
    let start = std::time::Instant::now();
    while child.try_wait().expect("wait for the binary").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still ran after {limit:?}: the bad input was accepted");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
        .wait_with_output()
        .expect("collect the binary's output")
}

/// `--metrics` on a port that is taken: one error line at start, before
/// anything is attached or joined.
#[test]
fn metrics_on_a_port_in_use_is_one_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("its address").to_string();
    for (binary, args) in [
        ("lb-user", vec!["run", "--iface", "lo", "--metrics", &addr]),
        ("backend-agent", vec!["--iface", "lo", "--metrics", &addr]),
    ] {
        let out = output_within(
            Command::new(bin(binary)).args(&args),
            Duration::from_secs(10),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{binary}: exited 0");
        let lines: Vec<&str> = stderr.trim_end().lines().collect();
        assert_eq!(lines.len(), 1, "{binary}: {stderr}");
        assert!(
            lines[0].starts_with("error:")
                && lines[0].contains("metrics endpoint")
                && lines[0].contains("in use"),
            "{binary}: {stderr}"
        );
    }
}

/// Man pages and completions come from the CLI definitions: each
/// binary's man page renders with `man -l`, and bash completion scripts
/// are produced.
#[test]
fn man_pages_render_and_completions_are_produced() {
    for (binary, generate) in [
        ("lb-user", &["generate"][..]),
        ("backend-agent", &["--generate"][..]),
    ] {
        let run = |what: &str| {
            let out = output_within(
                Command::new(bin(binary)).args(generate).arg(what),
                Duration::from_secs(10),
            );
            assert!(out.status.success(), "{binary} {what}: {out:?}");
            out.stdout
        };
        let page = std::env::temp_dir().join(format!("{binary}-{}.1", std::process::id()));
        std::fs::write(&page, run("man")).expect("write the man page");
        let rendered = output_within(
            Command::new("man")
                .arg("-l")
                .arg(&page)
                .env("MANWIDTH", "80"),
            Duration::from_secs(10),
        );
        let _ = std::fs::remove_file(&page);
        let text = String::from_utf8_lossy(&rendered.stdout);
        assert!(
            rendered.status.success() && text.contains("NAME") && text.contains("SYNOPSIS"),
            "{binary}: man -l: {text}"
        );
        let bash = String::from_utf8_lossy(&run("bash")).into_owned();
        assert!(bash.contains("complete -F"), "{binary}: {bash}");
    }
}

/// Both binaries check the kernel at start; `lb-user check-kernel` and
/// `backend-agent --check-kernel` print the same table of features with
/// this kernel's verdict on each: a kernel the README names has them all.
#[test]
fn this_kernel_has_every_feature_both_binaries_need() {
    for (binary, args) in [
        ("lb-user", &["check-kernel"][..]),
        ("backend-agent", &["--check-kernel"][..]),
    ] {
        let out = output_within(
            Command::new(bin(binary)).args(args),
            Duration::from_secs(10),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        println!("{binary} {}:\n{text}", args.join(" "));
        assert!(
            out.status.success(),
            "{binary}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(rows.len(), lb_host::kernel::FEATURES.len(), "{text}");
        assert!(rows.iter().all(|r| r.starts_with("ok ")), "{text}");
        assert!(text.starts_with("kernel ") && text.contains("needs Linux 6.6"));
    }
}
