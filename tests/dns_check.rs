//! The `dns` check against a DNS server the test runs on 127.0.0.1 (a
//! small UDP responder speaking the real wire format, via hickory-proto):
//! answers, failover to other addresses, NXDOMAIN, empty answers,
//! SERVFAIL, REFUSED and silence. No test touches the network.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::{RData, Record, RecordType, rdata};
use medic::check::Check;
use medic::check::dns::{DnsCheck, DnsParams};
use medic::observe::Outcome;
use tokio::net::UdpSocket;

/// How the fake server answers a name.
#[derive(Clone)]
enum Answer {
    Addresses(Vec<IpAddr>),
    Code(ResponseCode),
    Silence,
}

#[derive(Clone, Default)]
struct FakeDns {
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    /// Every question asked, as `name TYPE`.
    asked: Arc<Mutex<Vec<String>>>,
}

impl FakeDns {
    async fn start() -> (FakeDns, SocketAddr) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let dns = FakeDns::default();
        let d = dns.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                if let Some(reply) = d.answer(&q) {
                    let _ = sock.send_to(&reply, peer).await;
                }
            }
        });
        (dns, addr)
    }

    fn set(&self, name: &str, a: Answer) {
        self.answers.lock().unwrap().insert(name.into(), a);
    }

    fn asked(&self) -> Vec<String> {
        std::mem::take(&mut *self.asked.lock().unwrap())
    }

    fn answer(&self, q: &Message) -> Option<Vec<u8>> {
        let query = q.queries.first()?.clone();
        let name = query.name().to_string();
        let ty = query.query_type();
        self.asked.lock().unwrap().push(format!("{name} {ty}"));
        let behaviour = self.answers.lock().unwrap().get(&name).cloned();
        let mut r = Message::response(q.metadata.id, q.metadata.op_code);
        r.metadata.message_type = MessageType::Response;
        r.metadata.recursion_desired = q.metadata.recursion_desired;
        r.metadata.recursion_available = true;
        r.add_query(query.clone());
        match behaviour {
            None => r.metadata.response_code = ResponseCode::NXDomain,
            Some(Answer::Silence) => return None,
            Some(Answer::Code(c)) => r.metadata.response_code = c,
            Some(Answer::Addresses(ips)) => {
                for ip in ips {
                    let rd = match (ip, ty) {
                        (IpAddr::V4(v4), RecordType::A) => RData::A(rdata::A(v4)),
                        (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(rdata::AAAA(v6)),
                        _ => continue,
                    };
                    r.add_answer(Record::from_rdata(query.name().clone(), 30, rd));
                }
            }
        }
        r.to_vec().ok()
    }
}

fn check(server: SocketAddr, name: &str, expect: &[&str], timeout: Duration) -> DnsCheck {
    DnsCheck::build(
        &DnsParams {
            name: name.into(),
            expect: expect.iter().map(|s| s.to_string()).collect(),
            server: Some(server.to_string()),
        },
        timeout,
    )
    .unwrap()
}

fn ips(s: &[&str]) -> Vec<IpAddr> {
    s.iter().map(|a| a.parse().unwrap()).collect()
}

const T: Duration = Duration::from_secs(2);

#[tokio::test]
async fn resolves_to_expected_addresses_and_sees_a_failover_at_once() {
    let (dns, server) = FakeDns::start().await;
    dns.set(
        "keneyapp.test.",
        Answer::Addresses(ips(&["192.0.2.10", "192.0.2.11", "2001:db8::10"])),
    );
    let primary = check(server, "keneyapp.test.", &["192.0.2.10", "192.0.2.11"], T);
    let any = check(server, "keneyapp.test.", &[], T);
    assert_eq!(primary.run().await, Outcome::Ok);
    assert_eq!(any.run().await, Outcome::Ok);
    let mut asked = dns.asked();
    asked.sort();
    assert_eq!(
        asked,
        [
            "keneyapp.test. A",
            "keneyapp.test. A",
            "keneyapp.test. AAAA",
            "keneyapp.test. AAAA"
        ],
        "A and AAAA, once per run"
    );
    // The record is switched to the secondary region; no cache hides it.
    dns.set("keneyapp.test.", Answer::Addresses(ips(&["198.51.100.10"])));
    assert_eq!(
        primary.run().await,
        Outcome::Failing(
            "keneyapp.test.: resolves to 198.51.100.10, expected 192.0.2.10, 192.0.2.11".into()
        )
    );
    assert_eq!(
        check(server, "keneyapp.test.", &["198.51.100.10"], T)
            .run()
            .await,
        Outcome::Ok
    );
    assert_eq!(any.run().await, Outcome::Ok);
}

#[tokio::test]
async fn missing_names_and_failing_zones_are_failing() {
    let (dns, server) = FakeDns::start().await;
    dns.set("empty.test.", Answer::Addresses(vec![]));
    dns.set("broken.test.", Answer::Code(ResponseCode::ServFail));
    assert_eq!(
        check(server, "gone.test.", &[], T).run().await,
        Outcome::Failing("gone.test.: NXDOMAIN (no such name)".into())
    );
    assert_eq!(
        check(server, "empty.test.", &[], T).run().await,
        Outcome::Failing("empty.test.: no A or AAAA records".into())
    );
    assert_eq!(
        check(server, "broken.test.", &[], T).run().await,
        Outcome::Failing("broken.test.: SERVFAIL".into())
    );
}

#[tokio::test]
/// REFUSED is the server declining medic (unknown); a named server that
/// stays silent is a candidate unreachable (the engine's vantage judgement
/// decides whether it is the server's silence or medic's blindness).
async fn refused_is_unknown_and_a_silent_or_absent_server_is_unreachable() {
    let (dns, server) = FakeDns::start().await;
    dns.set("private.test.", Answer::Code(ResponseCode::Refused));
    dns.set("silent.test.", Answer::Silence);
    assert_eq!(
        check(server, "private.test.", &[], T).run().await,
        Outcome::Unknown("private.test.: REFUSED by the server".into())
    );
    let o = check(server, "silent.test.", &[], Duration::from_millis(300))
        .run()
        .await;
    assert_eq!(
        o,
        Outcome::Unreachable(format!("silent.test.: no answer in time from {server}"))
    );
    // Nothing listens on this port: ICMP port unreachable, or silence.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let o = check(addr, "keneyapp.test.", &[], Duration::from_millis(300))
        .run()
        .await;
    assert_eq!(
        o,
        Outcome::Unreachable(format!("keneyapp.test.: no answer in time from {addr}"))
    );
}
