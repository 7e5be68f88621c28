//! Runs the service checks: each `--check` once per round, all at once,
//! each bounded by the timeout (a command that hangs is killed with its
//! process group). A round passes when every check passes.
use std::{process::Stdio, time::Duration};

use http_body_util::{BodyExt, Empty};
use hyper::{Request, body::Bytes, header};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, process::Command, sync::mpsc, task::JoinSet, time::timeout};

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

/// Most of a body read: the status decides, the body is read so that the
/// server's answer is whole (chunked or not), up to this much.
const HTTP_BODY_READ: usize = 64 * 1024;

/// `GET path` over HTTP/1.1 with hyper; a 2xx or 3xx status passes (a
/// redirect is not followed).
async fn http(host: &str, port: u16, path: &str) -> CheckResult {
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    // Drives the connection; it ends with the check (its stream is dropped).
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(header::HOST, format!("{host}:{port}"))
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let line = format!(
        "HTTP {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut body = response.into_body();
    let mut read = 0;
    while read < HTTP_BODY_READ {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            Some(Err(e)) => return Err(format!("{line}, body: {e}")),
            None => break,
        }
    }
    if status.is_success() || status.is_redirection() {
        Ok(line.trim_end().to_owned())
    } else {
        Err(line.trim_end().to_owned())
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

    /// A server on loopback that answers every connection with `answer`
    /// (after reading the request head), or with nothing when it is empty.
    async fn canned(answer: &'static str) -> CheckSpec {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 1024];
                    let _ = stream.read(&mut buf).await;
                    if answer.is_empty() {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        CheckSpec::Http {
            host: "127.0.0.1".into(),
            port,
            path: "/health".into(),
        }
    }

    #[tokio::test]
    async fn http_passes_on_2xx_and_3xx_unfollowed_and_fails_on_the_rest() {
        let chunked =
            canned("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
                .await;
        assert_eq!(
            round(&[chunked], LIMIT).await.unwrap().split(": ").last(),
            Some("HTTP 200 OK")
        );
        let redirect = canned(
            "HTTP/1.1 302 Found\r\nLocation: http://192.0.2.1/\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(
            round(&[redirect], LIMIT).await.is_ok(),
            "a redirect passes, not followed"
        );
        let error = canned("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n").await;
        let failed = round(&[error], LIMIT).await.unwrap_err();
        assert!(
            failed.ends_with("HTTP 500 Internal Server Error"),
            "{failed}"
        );
        let garbage = canned("SSH-2.0-OpenSSH\r\n").await;
        assert!(round(&[garbage], LIMIT).await.is_err(), "not HTTP");
        let silent = canned("").await;
        let failed = round(&[silent], LIMIT).await.unwrap_err();
        assert!(failed.contains("no answer within"), "{failed}");
    }
}
