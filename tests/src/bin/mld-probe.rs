//! MLD from a namespace, for the tests of `lb_host::mld_socket` and of
//! IPv6 registration: sends the LB's query or a Done for a group (a leave
//! the host's live agent did not send), or waits (bounded) for the first
//! query for a group.
//! Usage: mld-probe query IFACE LB6 GROUP | mld-probe done IFACE GROUP |
//! mld-probe listen IFACE GROUP SECONDS
//! Prints one JSON line: what it sent, or the query it received.
use std::{
    net::Ipv6Addr,
    process::ExitCode,
    thread::sleep,
    time::{Duration, Instant},
};

use lb_common::mld::{MLD_DONE, MldMessage, mld_v1_message, mld_v2_query};
use lb_host::{mld_socket::MldSocket, system};

fn open(iface: &str) -> anyhow::Result<MldSocket> {
    let ifindex = system::interface_index(iface)?;
    let link_local = system::interface_ipv6_link_local(iface)?;
    Ok(MldSocket::open(iface, ifindex, link_local)?)
}

fn run(args: &[String]) -> anyhow::Result<bool> {
    match args {
        [mode, iface, lb, group] if mode == "query" => {
            let (lb, group): (Ipv6Addr, Ipv6Addr) = (lb.parse()?, group.parse()?);
            open(iface)?.send(&mld_v2_query(1000, lb.octets(), 2, 125), group)?;
            println!(r#"{{"sent":1}}"#);
            Ok(true)
        }
        [mode, iface, group] if mode == "done" => {
            let group: Ipv6Addr = group.parse()?;
            // To all routers, where a Done goes (RFC 2710).
            let all_routers = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
            open(iface)?.send(&mld_v1_message(MLD_DONE, 0, group.octets()), all_routers)?;
            println!(r#"{{"sent":1}}"#);
            Ok(true)
        }
        [mode, iface, group, seconds] if mode == "listen" => {
            let socket = open(iface)?;
            socket.join(group.parse()?)?;
            let deadline = Instant::now() + Duration::from_secs(seconds.parse()?);
            while Instant::now() < deadline {
                match socket.try_recv() {
                    Ok(got) => {
                        if let MldMessage::Query {
                            max_resp_ms,
                            address,
                        } = got.message
                        {
                            let address = Ipv6Addr::from(address);
                            println!(
                                r#"{{"source":"{}","address":"{address}","max_resp_ms":{max_resp_ms}}}"#,
                                got.source
                            );
                            return Ok(true);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(false)
        }
        _ => anyhow::bail!(
            "usage: mld-probe query IFACE LB6 GROUP | mld-probe done IFACE GROUP | mld-probe listen IFACE GROUP SECONDS"
        ),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: no query within the time given");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
