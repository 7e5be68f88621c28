//! The MLD socket (`lb_host::mld_socket`, protocol §9) between two hosts
//! of a bridge: the LB's query, sent from its link-local address to an
//! IPv6 group, reaches a member that joined the group with its
//! multicast-address field (the LB's unicast address) and max response
//! time intact, which the member's kernel would have ignored; on the wire
//! it has hop limit 1 and the Hop-by-Hop Router Alert MLD requires.
use std::time::Duration;

use anyhow::{Context, ensure};
use lb_tests::{Bridge, wait_for, with_topology};
use serde_json::Value;

const LB: usize = 0;
const MEMBER: usize = 1;
const GROUP: &str = "ff15::4c42";
const LB6: &str = "2001:db8::1";

#[test]
fn the_lbs_mld_query_reaches_a_member_with_its_address() -> anyhow::Result<()> {
    with_topology(2, Bridge::Flooding, |topo| {
        topo.ipv6(LB)?;
        topo.ipv6(MEMBER)?;
        let lb_link_local = "fe80::1";
        // A witness on the wire: a query behind a Hop-by-Hop header whose
        // first option is Router Alert (type 5) for MLD (value 0), hop
        // limit 1.
        let filter = "ip6[6] == 0 and ip6[7] == 1 and ip6[40] == 58 and ip6[42] == 5 \
                      and ip6[44:2] == 0 and ip6[48] == 130";
        let tcpdump_args = ["-i", "eth0", "-n", "-l", "-c", "1", filter];
        let mut wire = topo.spawn_program(MEMBER, "tcpdump", "tcpdump", &tcpdump_args)?;
        wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
            wire.log_text().contains("listening on").then_some(())
        })
        .context("tcpdump did not start")?;
        let mut listener = topo.spawn(
            MEMBER,
            "listen",
            "mld-probe",
            &["listen", "eth0", GROUP, "5"],
        )?;
        // Queries repeat until the listener has joined and heard one.
        let mut sent = 0;
        while !listener.has_exited() && sent < 40 {
            topo.exec(LB, "mld-probe", &["query", "eth0", LB6, GROUP])?;
            sent += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        ensure!(
            listener.wait_exit(Duration::from_secs(6))? == 0,
            "no query reached the member: {}",
            listener.log_text()
        );
        ensure!(
            wire.wait_exit(Duration::from_secs(3))? == 0,
            "no query with hop limit 1 and a Router Alert on the wire: {}",
            wire.log_text()
        );
        let log = listener.log_text();
        let line = log.lines().last().context("the listener printed nothing")?;
        let got: Value = serde_json::from_str(line)?;
        println!("after {sent} queries the member heard {got}");
        ensure!(got["address"] == LB6, "the query's address field: {got}");
        ensure!(got["max_resp_ms"] == 1000, "the max response time: {got}");
        ensure!(
            got["source"] == lb_link_local,
            "the query left from {} instead of the LB's link-local address",
            got["source"]
        );
        Ok(())
    })
}
