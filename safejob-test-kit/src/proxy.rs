//! A TCP fault proxy: sits between workers and their database and breaks connections on demand.
//!
//! [`FaultProxy::start`] listens on `127.0.0.1:0` and forwards every connection to a target (the
//! database), one pair of plain threads per connection — no async runtime. Faults:
//!
//! * [`cut_all`](FaultProxy::cut_all): every open connection is shut down now, in the middle of
//!   whatever it was doing;
//! * [`cut_after_match`](FaultProxy::cut_after_match): the next connection whose client sends
//!   bytes containing a pattern (`b"COMMIT"`, a marker bound into a finalize statement) has that
//!   packet **forwarded to the server**, and is cut when the server's reply arrives, **before the
//!   reply is forwarded**: the server applied the statement, the client never hears. That is an
//!   ambiguous commit. A match is looked for across packet boundaries;
//! * [`refuse_for`](FaultProxy::refuse_for): new connections are closed at once for a while (a
//!   database that is down or restarting).
//!
//! [`stats`](FaultProxy::stats) counts what was injected.
//!
//! ```
//! use std::{io::{Read, Write}, net::{TcpListener, TcpStream}};
//! use safejob_test_kit::proxy::FaultProxy;
//!
//! // A one-shot echo server stands in for the database.
//! let server = TcpListener::bind("127.0.0.1:0")?;
//! let target = server.local_addr()?;
//! std::thread::spawn(move || {
//!     if let Ok((mut s, _)) = server.accept() {
//!         let mut buf = [0; 64];
//!         while let Ok(n @ 1..) = s.read(&mut buf) {
//!             let _ = s.write_all(&buf[..n]);
//!         }
//!     }
//! });
//!
//! let proxy = FaultProxy::start(target)?;
//! let mut client = TcpStream::connect(proxy.local_addr())?;
//! client.write_all(b"ping")?;
//! let mut reply = [0; 4];
//! client.read_exact(&mut reply)?;
//! assert_eq!(&reply, b"ping");
//!
//! proxy.cut_after_match(b"COMMIT".to_vec());
//! client.write_all(b"COMMIT")?; // reaches the server, which echoes it...
//! let mut rest = Vec::new();
//! let _ = client.read_to_end(&mut rest); // ...but the client only sees the connection close
//! assert!(rest.is_empty());
//! assert_eq!(proxy.stats().ambiguous_cuts, 1);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::{
    collections::HashMap,
    io::{self, ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// How long a doomed connection waits for the server's reply before it is cut anyway.
const REPLY_WAIT: Duration = Duration::from_secs(5);
/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// How long connecting to the target may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What a [`FaultProxy`] has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted and forwarded.
    pub connections: u64,
    /// Connections cut by [`FaultProxy::cut_all`].
    pub cuts: u64,
    /// Connections cut after a matching packet reached the server and before its reply reached
    /// the client.
    pub ambiguous_cuts: u64,
    /// Connections refused (closed at once) by [`FaultProxy::refuse_for`].
    pub refused: u64,
    /// Connections whose target could not be reached (closed at once).
    pub connect_failures: u64,
}

/// A TCP fault proxy on `127.0.0.1`; see the [module docs](self). Dropping it stops the proxy and
/// closes every connection.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("target", &self.shared.target)
            .field("stats", &self.stats())
            .finish()
    }
}

struct Shared {
    target: SocketAddr,
    stop: AtomicBool,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    armed: Mutex<Option<Vec<u8>>>,
    refuse_until: Mutex<Option<Instant>>,
    next_id: AtomicU64,
    connections: AtomicU64,
    cuts: AtomicU64,
    ambiguous_cuts: AtomicU64,
    refused: AtomicU64,
    connect_failures: AtomicU64,
}

/// One proxied connection: both sockets, so any thread can cut it.
struct Conn {
    client: TcpStream,
    server: TcpStream,
    /// A matching packet went to the server: its reply must never reach the client.
    doomed: AtomicBool,
    closed: AtomicBool,
}

impl Conn {
    /// Shuts both sockets down (both directions), the forwarding threads then end, after
    /// `count` has counted the cut: whoever sees the connection close also sees it counted.
    /// False if it was closed already.
    fn cut(&self, count: Option<&AtomicU64>) -> bool {
        if self.closed.swap(true, Ordering::SeqCst) {
            return false;
        }
        if let Some(count) = count {
            count.fetch_add(1, Ordering::SeqCst);
        }
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
        true
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `target`.
    pub fn start(target: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            armed: Mutex::new(None),
            refuse_until: Mutex::new(None),
            next_id: AtomicU64::new(1),
            connections: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            ambiguous_cuts: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("fault-proxy-accept".into())
                .spawn(move || accept_loop(&listener, &shared))?
        };
        Ok(Self {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The address to connect to instead of the target.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The target every connection is forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// Cuts every open connection now; returns how many were cut.
    pub fn cut_all(&self) -> usize {
        let conns: Vec<Arc<Conn>> = lock(&self.shared.conns).drain().map(|(_, c)| c).collect();
        conns
            .iter()
            .filter(|c| c.cut(Some(&self.shared.cuts)))
            .count()
    }

    /// Arms a one-shot ambiguous cut: the next client packet containing `pattern` is forwarded to
    /// the server, and its connection is cut when the server replies, before the reply is
    /// forwarded. Replaces a pattern armed earlier that has not matched yet.
    pub fn cut_after_match(&self, pattern: Vec<u8>) {
        *lock(&self.shared.armed) = (!pattern.is_empty()).then_some(pattern);
    }

    /// Whether a [`cut_after_match`](Self::cut_after_match) is armed and has not matched yet.
    pub fn is_armed(&self) -> bool {
        lock(&self.shared.armed).is_some()
    }

    /// Disarms a pending [`cut_after_match`](Self::cut_after_match); true if one was armed.
    pub fn disarm(&self) -> bool {
        lock(&self.shared.armed).take().is_some()
    }

    /// Closes every new connection at once for `duration` (open ones are left alone).
    pub fn refuse_for(&self, duration: Duration) {
        *lock(&self.shared.refuse_until) = Some(Instant::now() + duration);
    }

    /// How many connections are open now.
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// What was injected so far.
    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            connections: s.connections.load(Ordering::SeqCst),
            cuts: s.cuts.load(Ordering::SeqCst),
            ambiguous_cuts: s.ambiguous_cuts.load(Ordering::SeqCst),
            refused: s.refused.load(Ordering::SeqCst),
            connect_failures: s.connect_failures.load(Ordering::SeqCst),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for conn in lock(&self.shared.conns).drain().map(|(_, c)| c) {
            conn.cut(None);
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let refusing = lock(&shared.refuse_until).is_some_and(|t| Instant::now() < t);
                if refusing {
                    shared.refused.fetch_add(1, Ordering::SeqCst);
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                if let Err(error) = open(client, shared) {
                    tracing::debug!(%error, "fault proxy: could not forward a connection");
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(error) => {
                tracing::warn!(%error, "fault proxy: accept failed");
                thread::sleep(POLL);
            }
        }
    }
}

fn open(client: TcpStream, shared: &Arc<Shared>) -> io::Result<()> {
    client.set_nonblocking(false)?;
    let server = match TcpStream::connect_timeout(&shared.target, CONNECT_TIMEOUT) {
        Ok(server) => server,
        Err(e) => {
            shared.connect_failures.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            return Err(e);
        }
    };
    for s in [&client, &server] {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(POLL))?;
    }
    let conn = Arc::new(Conn {
        client: client.try_clone()?,
        server: server.try_clone()?,
        doomed: AtomicBool::new(false),
        closed: AtomicBool::new(false),
    });
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    shared.connections.fetch_add(1, Ordering::SeqCst);
    lock(&shared.conns).insert(id, conn.clone());
    {
        let (shared, conn) = (shared.clone(), conn.clone());
        let (client, server) = (client.try_clone()?, server.try_clone()?);
        thread::Builder::new()
            .name("fault-proxy-c2s".into())
            .spawn(move || client_to_server(client, server, &conn, &shared, id))?;
    }
    let shared = shared.clone();
    thread::Builder::new()
        .name("fault-proxy-s2c".into())
        .spawn(move || server_to_client(server, client, &conn, &shared, id))?;
    Ok(())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn finish(conn: &Conn, shared: &Shared, id: u64) {
    conn.cut(None);
    lock(&shared.conns).remove(&id);
}

fn client_to_server(
    mut client: TcpStream,
    mut server: TcpStream,
    conn: &Conn,
    shared: &Shared,
    id: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    // The last bytes seen, so a pattern split across two reads still matches.
    let mut window: Vec<u8> = Vec::new();
    loop {
        if shared.stop.load(Ordering::SeqCst) || conn.closed.load(Ordering::SeqCst) {
            break;
        }
        let n = match client.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let chunk = &buf[..n];
        if !conn.doomed.load(Ordering::SeqCst) {
            window.extend_from_slice(chunk);
            let mut armed = lock(&shared.armed);
            if let Some(pattern) = armed.as_deref() {
                if contains(&window, pattern) {
                    // Doomed before the packet leaves: no reply to it can be forwarded.
                    conn.doomed.store(true, Ordering::SeqCst);
                    *armed = None;
                } else {
                    let keep = pattern.len().saturating_sub(1);
                    let cut = window.len().saturating_sub(keep);
                    window.drain(..cut);
                }
            } else {
                window.clear();
            }
        }
        if server.write_all(chunk).is_err() {
            break;
        }
    }
    // A doomed connection is closed by the other direction once the server has replied.
    if !conn.doomed.load(Ordering::SeqCst) {
        finish(conn, shared, id);
    }
}

fn server_to_client(
    mut server: TcpStream,
    mut client: TcpStream,
    conn: &Conn,
    shared: &Shared,
    id: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut doomed_since: Option<Instant> = None;
    loop {
        if shared.stop.load(Ordering::SeqCst) || conn.closed.load(Ordering::SeqCst) {
            break;
        }
        let doomed = conn.doomed.load(Ordering::SeqCst);
        if doomed {
            let since = *doomed_since.get_or_insert_with(Instant::now);
            if since.elapsed() > REPLY_WAIT {
                // The server never answered: cut anyway; the outcome is just as unknown.
                ambiguous(conn, shared, id);
                return;
            }
        }
        let n = match server.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        // Read the flag again: it is set before the matching packet is written to the server, so
        // any reply to that packet is read after it is set.
        if conn.doomed.load(Ordering::SeqCst) {
            ambiguous(conn, shared, id);
            return;
        }
        if client.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    finish(conn, shared, id);
}

fn ambiguous(conn: &Conn, shared: &Shared, id: u64) {
    conn.cut(Some(&shared.ambiguous_cuts));
    lock(&shared.conns).remove(&id);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::contains;

    #[test]
    fn contains_finds_inner_and_edge_matches() {
        assert!(contains(b"xxCOMMITyy", b"COMMIT"));
        assert!(contains(b"COMMIT", b"COMMIT"));
        assert!(!contains(b"COMMI", b"COMMIT"));
        assert!(!contains(b"abc", b""));
    }
}
