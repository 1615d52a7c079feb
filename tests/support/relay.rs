//! A TCP relay between one client (the operator) and the API server, which a test can cut: every
//! connection dropped and new ones refused (the port closed), then open again. A real network
//! fault at the transport, not a mock: TLS runs end to end through it, so the client verifies
//! the API server's certificate, which names the address (the same here) and not the port.

use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How often the accept loop looks at the cut flag.
const POLL: Duration = Duration::from_millis(20);

struct Shared {
    /// Where the relay listens; the same port again after a cut.
    address: SocketAddr,
    target: SocketAddr,
    cut: AtomicBool,
    stopped: AtomicBool,
    /// Both sides of every connection relayed, to shut them at a cut.
    streams: Mutex<Vec<TcpStream>>,
}

/// The relay, stopped (every connection closed) when dropped.
pub struct Relay {
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Relay {
    /// Listens on `target`'s address, another (free) port, and relays to `target`.
    pub fn start(target: SocketAddr) -> std::io::Result<Relay> {
        let listener = TcpListener::bind(SocketAddr::new(target.ip(), 0))?;
        let shared = Arc::new(Shared {
            address: listener.local_addr()?,
            target,
            cut: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            streams: Mutex::new(Vec::new()),
        });
        let accepting = shared.clone();
        let acceptor = thread::spawn(move || accept_loop(listener, &accepting));
        Ok(Relay {
            shared,
            acceptor: Some(acceptor),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.shared.address
    }

    /// Drops every relayed connection and refuses new ones until [`Relay::resume`].
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.close_all();
    }

    pub fn resume(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.close_all();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Shared {
    fn close_all(&self) {
        for stream in self.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Accepts while not cut. At a cut the listening socket is closed, so a connect is refused as by
/// a host whose port is down, and bound again (same port) when the cut ends.
fn accept_loop(listener: TcpListener, shared: &Shared) {
    let mut listener = Some(listener);
    while !shared.stopped.load(Ordering::SeqCst) {
        if shared.cut.load(Ordering::SeqCst) {
            listener = None;
            thread::sleep(POLL);
            continue;
        }
        let Some(open) = &listener else {
            // The port was ours a moment ago; should someone take it meanwhile, keep trying.
            listener = TcpListener::bind(shared.address).ok();
            if listener.is_none() {
                thread::sleep(POLL);
            }
            continue;
        };
        open.set_nonblocking(true).expect("a nonblocking listener");
        match open.accept() {
            Ok((client, _)) => {
                if let Err(err) = relay(client, shared) {
                    eprintln!("relay: connecting to {}: {err}", shared.target);
                }
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(err) => {
                eprintln!("relay: accepting: {err}");
                thread::sleep(POLL);
            }
        }
    }
}

/// Connects `client` to the target and copies both ways on two threads.
fn relay(client: TcpStream, shared: &Shared) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect_timeout(&shared.target, Duration::from_secs(5))?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    {
        let mut streams = shared.streams.lock().unwrap();
        // Connections already closed are only kept until the next cut: prune them now and then.
        if streams.len() > 256 {
            streams.retain(|s| s.peer_addr().is_ok());
        }
        streams.push(client.try_clone()?);
        streams.push(server.try_clone()?);
    }
    // Accepted just before a cut began: the cut has already closed the others.
    if shared.cut.load(Ordering::SeqCst) {
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
        return Ok(());
    }
    for (mut from, mut to) in [(client.try_clone()?, server.try_clone()?), (server, client)] {
        thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    }
    Ok(())
}

/// Waits until `address` refuses connections (the cut has taken effect) or `limit` passes.
pub fn refuses(address: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match TcpStream::connect_timeout(&address, Duration::from_millis(200)) {
            Err(err) if err.kind() == ErrorKind::ConnectionRefused => return true,
            _ => thread::sleep(POLL),
        }
    }
    false
}
