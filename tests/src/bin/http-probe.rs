//! HTTP client for the forwarding tests; prints one JSON line.
//!   http-probe spread ADDR:PORT COUNT   short connections, count per name
//!   http-probe hold ADDR:PORT SECONDS   one connection, a request every 50 ms;
//!                                       prints `first NAME` once it is known
//!   http-probe upload ADDR:PORT BYTES   one POST of BYTES; the answer and time
//!   http-probe download ADDR:PORT BYTES one GET of BYTES; the length and time
//!   http-probe many ADDR:PORT SECONDS   200 connections, each a request every
//!                                       100 ms (waiting up to 10 s for an answer);
//!                                       failures, backend changes, slowest answer
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::ExitCode,
    time::{Duration, Instant},
};

const TIMEOUT: Duration = Duration::from_secs(1);

/// Sends one request on `stream` and returns the body.
fn request(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    close: bool,
) -> std::io::Result<String> {
    let connection = if close { "close" } else { "keep-alive" };
    // One write per request: split writes stall on Nagle and delayed ACKs.
    let head = format!("GET / HTTP/1.1\r\nHost: vip\r\nConnection: {connection}\r\n\r\n");
    exchange(stream, reader, head.as_bytes())
}

/// Writes `message` and reads one response; returns its body.
fn exchange(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    message: &[u8],
) -> std::io::Result<String> {
    stream.write_all(message)?;
    let mut length = None;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length.unwrap_or(0)];
    reader.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn connect(addr: SocketAddr) -> std::io::Result<(TcpStream, BufReader<TcpStream>)> {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let reader = BufReader::new(stream.try_clone()?);
    Ok((stream, reader))
}

/// Longest a spread may take, whatever the count: failures are bounded.
const SPREAD_LIMIT: Duration = Duration::from_secs(60);

fn spread(addr: SocketAddr, count: u32) -> ExitCode {
    let start = Instant::now();
    let mut names: BTreeMap<String, u32> = BTreeMap::new();
    let mut errors = 0u32;
    for done in 0..count {
        if start.elapsed() > SPREAD_LIMIT {
            errors += count - done;
            break;
        }
        match connect(addr).and_then(|(mut s, mut r)| request(&mut s, &mut r, true)) {
            Ok(name) => *names.entry(name).or_default() += 1,
            Err(_) => errors += 1,
        }
    }
    let names: Vec<String> = names.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    println!("{{\"names\":{{{}}},\"errors\":{errors}}}", names.join(","));
    ExitCode::SUCCESS
}

fn hold(addr: SocketAddr, seconds: u64) -> ExitCode {
    let start = Instant::now();
    let (mut stream, mut reader) = match connect(addr) {
        Ok(c) => c,
        Err(e) => {
            println!("{{\"error\":\"connect: {e}\"}}");
            return ExitCode::FAILURE;
        }
    };
    let mut names: Vec<String> = Vec::new();
    let mut requests = 0u32;
    // Longest time between two answers: a forwarding gap shows here.
    let mut last_answer = Instant::now();
    let mut max_gap = Duration::ZERO;
    let mut error = None;
    while start.elapsed() < Duration::from_secs(seconds) {
        match request(&mut stream, &mut reader, false) {
            Ok(name) => {
                if names.is_empty() {
                    println!("first {name}");
                }
                if names.last() != Some(&name) {
                    names.push(name);
                }
                requests += 1;
                max_gap = max_gap.max(last_answer.elapsed());
                last_answer = Instant::now();
            }
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let names: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let error = error.map_or("null".to_owned(), |e| format!("\"{e}\""));
    println!(
        "{{\"names\":[{}],\"requests\":{requests},\"max_gap_ms\":{},\"error\":{error}}}",
        names.join(","),
        max_gap.as_millis()
    );
    ExitCode::SUCCESS
}

/// One large request (`upload`) or response (`download`) of `bytes`.
fn transfer(addr: SocketAddr, bytes: u32, upload: bool) -> ExitCode {
    let start = Instant::now();
    let message = if upload {
        let mut m = format!(
            "POST /upload HTTP/1.1\r\nHost: vip\r\nContent-Length: {bytes}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        m.resize(m.len() + bytes as usize, b'u');
        m
    } else {
        format!("GET /bytes/{bytes} HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
            .into_bytes()
    };
    let result = connect(addr).and_then(|(mut s, mut r)| exchange(&mut s, &mut r, &message));
    let ms = start.elapsed().as_millis();
    match result {
        Ok(body) if upload => println!("{{\"answer\":\"{body}\",\"ms\":{ms},\"error\":null}}"),
        Ok(body) => println!("{{\"bytes\":{},\"ms\":{ms},\"error\":null}}", body.len()),
        Err(e) => println!("{{\"ms\":{ms},\"error\":\"{e}\"}}"),
    }
    ExitCode::SUCCESS
}

/// Connections of `many`, and how long one of its requests may wait: TCP
/// retransmits through a routing change that takes seconds.
const MANY_CONNECTIONS: usize = 200;
const MANY_PATIENCE: Duration = Duration::from_secs(10);

/// What one of `many`'s connections saw.
#[derive(Default)]
struct ConnectionLog {
    requests: u64,
    failures: u64,
    /// Answers from another backend than the one before.
    moved: u64,
    slowest: Duration,
}

/// One connection of `many`: a request every 100 ms until `until`; a
/// failed one is counted and the connection opened again.
fn keep_asking(addr: SocketAddr, until: Instant) -> ConnectionLog {
    let mut log = ConnectionLog::default();
    let mut last_name: Option<String> = None;
    let mut connection = None;
    while Instant::now() < until {
        if connection.is_none() {
            connection = connect(addr)
                .and_then(|(s, r)| {
                    s.set_read_timeout(Some(MANY_PATIENCE))?;
                    s.set_write_timeout(Some(MANY_PATIENCE))?;
                    Ok((s, r))
                })
                .ok();
        }
        let start = Instant::now();
        let answer = match connection.as_mut() {
            Some((stream, reader)) => request(stream, reader, false).ok(),
            None => None,
        };
        log.requests += 1;
        match answer {
            Some(name) => {
                log.slowest = log.slowest.max(start.elapsed());
                if last_name.as_ref().is_some_and(|n| *n != name) {
                    log.moved += 1;
                }
                last_name = Some(name);
            }
            None => {
                log.failures += 1;
                connection = None;
                last_name = None;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    log
}

fn many(addr: SocketAddr, seconds: u64) -> ExitCode {
    let until = Instant::now() + Duration::from_secs(seconds);
    let logs: Vec<ConnectionLog> = (0..MANY_CONNECTIONS)
        .map(|_| std::thread::spawn(move || keep_asking(addr, until)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap_or_default())
        .collect();
    let sum = |f: fn(&ConnectionLog) -> u64| logs.iter().map(f).sum::<u64>();
    let broken = logs.iter().filter(|l| l.failures > 0).count();
    let slowest = logs.iter().map(|l| l.slowest).max().unwrap_or_default();
    println!(
        "{{\"connections\":{},\"requests\":{},\"failures\":{},\"broken_connections\":{broken},\"moved\":{},\"slowest_ms\":{}}}",
        logs.len(),
        sum(|l| l.requests),
        sum(|l| l.failures),
        sum(|l| l.moved),
        slowest.as_millis()
    );
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        eprintln!("error: usage: http-probe spread|hold|upload|download|many ADDR:PORT N");
        ExitCode::from(2)
    };
    let [mode, addr, n] = args.as_slice() else {
        return usage();
    };
    let (Ok(addr), Ok(n)) = (addr.parse::<SocketAddr>(), n.parse::<u32>()) else {
        return usage();
    };
    match mode.as_str() {
        "spread" => spread(addr, n),
        "hold" => hold(addr, u64::from(n)),
        "upload" => transfer(addr, n, true),
        "download" => transfer(addr, n, false),
        "many" => many(addr, u64::from(n)),
        _ => usage(),
    }
}
