//! A small HTTP/1.1 server for the forwarding tests: answers every request
//! with its own name, keeping connections alive; a request for `/500`
//! gets a 500 (a failing service, for the agents' checks); a request with
//! a body is answered `NAME received N`; `/bytes/N` gets N bytes.
//! Usage: name-server ADDR:PORT NAME
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::ExitCode,
    thread,
};

fn serve(stream: TcpStream, name: &str) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        // Read one request head; an empty read is the client closing.
        let mut close = false;
        let mut path = String::new();
        let mut body_len = 0u64;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if first {
                path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                first = false;
            }
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("connection: close") {
                close = true;
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                body_len = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
        }
        let received = std::io::copy(&mut (&mut reader).take(body_len), &mut std::io::sink())?;
        let failing = path == "/500";
        let body = if let Some(n) = path.strip_prefix("/bytes/") {
            "x".repeat(n.parse().unwrap_or(0))
        } else if body_len > 0 {
            format!("{name} received {received}")
        } else {
            name.to_owned()
        };
        let connection = if close { "close" } else { "keep-alive" };
        // One write per response: with Nagle, split writes stall on delayed ACKs.
        let status = if failing {
            "500 Internal Server Error"
        } else {
            "200 OK"
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
            body.len()
        );
        writer.write_all(response.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, name] = args.as_slice() else {
        eprintln!("error: usage: name-server ADDR:PORT NAME");
        return ExitCode::from(2);
    };
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: binding {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    for stream in listener.incoming().flatten() {
        let name = name.clone();
        thread::spawn(move || serve(stream, &name));
    }
    ExitCode::SUCCESS
}
