//! The fault proxy against a local echo server. Its real ambiguous commits through PostgreSQL
//! and MariaDB are in `safejob-diesel/tests/proxy.rs`, next to the backends' cargo features.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use safejob_test_kit::proxy::FaultProxy;

/// An echo server that also keeps every byte it received, across connections.
struct Echo {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
}

impl Echo {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let sink = sink.clone();
                thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n @ 1..) = stream.read(&mut buf) {
                        sink.lock().expect("sink").extend_from_slice(&buf[..n]);
                        if stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { addr, received }
    }

    fn received(&self) -> Vec<u8> {
        self.received.lock().expect("received").clone()
    }
}

fn connect(proxy: &FaultProxy) -> TcpStream {
    let s = TcpStream::connect(proxy.local_addr()).expect("connect to the proxy");
    // A safety net against a hung test, not a timed assertion.
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s
}

fn echo_round(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).expect("write");
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).expect("read the echo");
    got
}

/// What the client reads until the connection ends (EOF or reset).
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("the connection was not closed")
            }
            Err(_) => return got,
        }
    }
}

#[test]
fn forwards_both_ways_on_many_connections() {
    let echo = Echo::start();
    let proxy = FaultProxy::start(echo.addr).expect("proxy");
    assert!(proxy.local_addr().ip().is_loopback());
    let mut a = connect(&proxy);
    let mut b = connect(&proxy);
    assert_eq!(echo_round(&mut a, b"hello"), b"hello");
    assert_eq!(echo_round(&mut b, b"world"), b"world");
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut a2 = a.try_clone().expect("clone");
        let big = big.clone();
        thread::spawn(move || a2.write_all(&big).expect("write big"))
    };
    let mut got = vec![0u8; big.len()];
    a.read_exact(&mut got).expect("read big");
    writer.join().expect("writer");
    assert_eq!(got, big);
    let stats = proxy.stats();
    assert_eq!(stats.connections, 2);
    assert_eq!(stats.cuts + stats.ambiguous_cuts + stats.refused, 0);
}

#[test]
fn cut_all_closes_every_open_connection() {
    let echo = Echo::start();
    let proxy = FaultProxy::start(echo.addr).expect("proxy");
    let mut a = connect(&proxy);
    let mut b = connect(&proxy);
    assert_eq!(echo_round(&mut a, b"1"), b"1");
    assert_eq!(echo_round(&mut b, b"2"), b"2");
    assert_eq!(proxy.cut_all(), 2);
    assert!(read_until_closed(&mut a).is_empty());
    assert!(read_until_closed(&mut b).is_empty());
    assert_eq!(proxy.stats().cuts, 2);
    assert_eq!(proxy.open_connections(), 0);
    // New connections still work.
    let mut c = connect(&proxy);
    assert_eq!(echo_round(&mut c, b"again"), b"again");
}

#[test]
fn a_matching_packet_reaches_the_server_but_its_reply_never_reaches_the_client() {
    let echo = Echo::start();
    let proxy = FaultProxy::start(echo.addr).expect("proxy");
    let mut a = connect(&proxy);
    let mut other = connect(&proxy);
    proxy.cut_after_match(b"COMMIT".to_vec());
    assert!(proxy.is_armed());
    // Traffic without the pattern passes untouched.
    assert_eq!(echo_round(&mut a, b"BEGIN; UPDATE"), b"BEGIN; UPDATE");
    assert_eq!(echo_round(&mut other, b"SELECT 1"), b"SELECT 1");
    // The pattern split across two writes still matches.
    a.write_all(b"xxCOM").expect("write");
    a.flush().expect("flush");
    let first = {
        let mut buf = [0u8; 5];
        a.read_exact(&mut buf).expect("echo of the first half");
        buf
    };
    assert_eq!(&first, b"xxCOM");
    a.write_all(b"MIT;").expect("write");
    assert!(
        read_until_closed(&mut a).is_empty(),
        "the reply to the matching packet must not be forwarded"
    );
    let received = echo.received();
    assert!(
        received.windows(7).any(|w| w == b"COMMIT;"),
        "the matching packet must reach the server"
    );
    assert_eq!(proxy.stats().ambiguous_cuts, 1);
    assert!(!proxy.is_armed(), "the cut is one-shot");
    // The other connection and later matches are untouched.
    assert_eq!(echo_round(&mut other, b"COMMIT"), b"COMMIT");
    assert_eq!(proxy.stats().ambiguous_cuts, 1);
}

#[test]
fn disarm_cancels_a_pending_cut() {
    let echo = Echo::start();
    let proxy = FaultProxy::start(echo.addr).expect("proxy");
    proxy.cut_after_match(b"COMMIT".to_vec());
    assert!(proxy.disarm());
    assert!(!proxy.disarm());
    let mut a = connect(&proxy);
    assert_eq!(echo_round(&mut a, b"COMMIT"), b"COMMIT");
    assert_eq!(proxy.stats().ambiguous_cuts, 0);
}

#[test]
fn refused_connections_are_closed_at_once_and_counted() {
    let echo = Echo::start();
    let proxy = FaultProxy::start(echo.addr).expect("proxy");
    let mut open = connect(&proxy);
    // One round trip first: the proxy has accepted it before the refusal starts.
    assert_eq!(echo_round(&mut open, b"first"), b"first");
    proxy.refuse_for(Duration::from_secs(600));
    let mut refused = connect(&proxy);
    // Whatever was written, nothing comes back: the proxy closed it.
    let _ = refused.write_all(b"hello");
    assert!(read_until_closed(&mut refused).is_empty());
    assert_eq!(proxy.stats().refused, 1);
    // Connections opened before keep working.
    assert_eq!(echo_round(&mut open, b"still"), b"still");
    // Lifting the refusal (a zero window) lets new connections through again.
    proxy.refuse_for(Duration::ZERO);
    let mut later = connect(&proxy);
    assert_eq!(echo_round(&mut later, b"back"), b"back");
    let _ = open.shutdown(Shutdown::Both);
}

#[test]
fn an_unreachable_target_closes_the_client_and_is_counted() {
    // A port that was just free: nothing listens on it.
    let free = TcpListener::bind("127.0.0.1:0").expect("bind");
    let target = free.local_addr().expect("addr");
    drop(free);
    let proxy = FaultProxy::start(target).expect("proxy");
    let mut s = connect(&proxy);
    assert!(read_until_closed(&mut s).is_empty());
    // Counted before the client was closed.
    assert_eq!(proxy.stats().connect_failures, 1);
}
