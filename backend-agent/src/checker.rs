//! Runs the service checks: each `--check` once per round, all at once,
//! each bounded by the timeout (a command that hangs is killed with its
//! process group). A round passes when every check passes.
use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::Command,
    sync::mpsc,
    task::JoinSet,
    time::timeout,
};

use crate::health::CheckSpec;

/// The outcome of one check: `Ok` with what it saw, or `Err` with why it failed.
pub type CheckResult = Result<String, String>;

/// Runs every check once; `Ok` if all pass, else the first failure (in
/// the order given), each prefixed with its check.
pub async fn round(specs: &[CheckSpec], limit: Duration) -> CheckResult {
    let mut set = JoinSet::new();
    for (index, spec) in specs.iter().cloned().enumerate() {
        set.spawn(async move { (index, run(&spec, limit).await, spec) });
    }
    let mut results: Vec<(usize, CheckResult, CheckSpec)> = Vec::with_capacity(specs.len());
    while let Some(joined) = set.join_next().await {
        results.push(joined.map_err(|e| format!("check task failed: {e}"))?);
    }
    results.sort_by_key(|(index, _, _)| *index);
    let mut seen = Vec::new();
    for (_, result, spec) in results {
        match result {
            Ok(detail) => seen.push(format!("{spec}: {detail}")),
            Err(reason) => return Err(format!("{spec}: {reason}")),
        }
    }
    Ok(seen.join("; "))
}

async fn run(spec: &CheckSpec, limit: Duration) -> CheckResult {
    match spec {
        CheckSpec::Tcp { port } => bounded(limit, tcp(*port)).await,
        CheckSpec::Http { host, port, path } => bounded(limit, http(host, *port, path)).await,
        CheckSpec::Exec { command } => exec(command, limit).await,
    }
}

async fn bounded(limit: Duration, check: impl Future<Output = CheckResult>) -> CheckResult {
    timeout(limit, check).await.unwrap_or_else(|_| {
        Err(format!(
            "no answer within {}",
            humantime::format_duration(limit)
        ))
    })
}

async fn tcp(port: u16) -> CheckResult {
    TcpStream::connect(("127.0.0.1", port))
        .await
        .map(|_| "connection accepted".to_owned())
        .map_err(|e| format!("connect: {e}"))
}

/// `GET path` over HTTP/1.0; a 2xx or 3xx status passes.
async fn http(host: &str, port: u16, path: &str) -> CheckResult {
    let mut stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    // The status line is all that is needed; bounded in size.
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("").trim();
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))?;
    if (200..400).contains(&status) {
        Ok(line.to_owned())
    } else {
        Err(line.to_owned())
    }
}

/// `sh -c command` in a process group of its own, killed whole when it
/// outlives `limit`; exit 0 passes. The last line of its output is kept.
async fn exec(command: &str, limit: Duration) -> CheckResult {
    let child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    let group = child.id();
    match timeout(limit, child.wait_with_output()).await {
        Ok(Ok(output)) => {
            let text = [&output.stdout[..], &output.stderr[..]].concat();
            let text = String::from_utf8_lossy(&text);
            let last = text.lines().last().unwrap_or("").trim().to_owned();
            let detail = if last.is_empty() {
                output.status.to_string()
            } else {
                format!("{}: {last}", output.status)
            };
            if output.status.success() {
                Ok(detail)
            } else {
                Err(detail)
            }
        }
        Ok(Err(e)) => Err(format!("waiting for it: {e}")),
        Err(_) => {
            if let Some(pgid) = group.and_then(|id| i32::try_from(id).ok()) {
                // SAFETY: kill has no memory preconditions; the group is the
                // one this check started.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            Err(format!(
                "still running after {}; killed",
                humantime::format_duration(limit)
            ))
        }
    }
}

/// Runs the checks every `interval` in a task of their own; each round's
/// result arrives on the returned channel. `None` without checks.
pub fn start_checks(
    checks: Vec<CheckSpec>,
    interval: Duration,
    limit: Duration,
) -> Option<mpsc::Receiver<CheckResult>> {
    if checks.is_empty() {
        return None;
    }
    let (results, receiver) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if results.send(round(&checks, limit).await).await.is_err() {
                break;
            }
        }
    });
    Some(receiver)
}

/// The next round's result; never, without checks.
pub async fn next_checks(results: &mut Option<mpsc::Receiver<CheckResult>>) -> Option<CheckResult> {
    match results {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(2);

    fn exec(command: &str) -> CheckSpec {
        CheckSpec::Exec {
            command: command.to_owned(),
        }
    }

    #[tokio::test]
    async fn a_missing_command_is_a_failing_check_not_a_crash() {
        let result = round(&[exec("xlb-no-such-command-here")], LIMIT).await;
        let reason = result.expect_err("a missing command passed");
        assert!(reason.contains("127"), "{reason}");
    }

    #[tokio::test]
    async fn every_check_must_pass_and_the_first_failure_is_reported() {
        assert!(
            round(&[exec("true"), exec("echo fine")], LIMIT)
                .await
                .is_ok()
        );
        let reason = round(&[exec("true"), exec("echo broken; exit 3")], LIMIT)
            .await
            .expect_err("a failing check passed");
        assert!(reason.starts_with("exec:echo broken"), "{reason}");
        assert!(reason.contains("broken"), "{reason}");
    }

    #[tokio::test]
    async fn a_command_that_hangs_fails_at_the_timeout() {
        let started = std::time::Instant::now();
        let reason = round(&[exec("sleep 30")], Duration::from_millis(200))
            .await
            .expect_err("a hung command passed");
        assert!(reason.contains("killed"), "{reason}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn tcp_passes_on_a_listening_port_and_fails_on_a_closed_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(round(&[CheckSpec::Tcp { port }], LIMIT).await.is_ok());
        drop(listener);
        assert!(round(&[CheckSpec::Tcp { port }], LIMIT).await.is_err());
    }
}
