//! A TCP relay on 127.0.0.1 that holds back a large reply: once a
//! connection has carried more than `after` bytes from the server, the
//! relay pauses that connection's server-to-client bytes for `hold` (once),
//! then passes the rest on. A store behind it reads a large answer no
//! sooner than `hold` after it started to arrive; small replies are not
//! delayed.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub struct SlowLargeReplies {
    pub addr: SocketAddr,
    holding: Arc<AtomicUsize>,
}

impl SlowLargeReplies {
    /// Relays to `server`; runs until the test process ends.
    pub fn start(server: SocketAddr, after: usize, hold: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let holding = Arc::new(AtomicUsize::new(0));
        let counter = holding.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(upstream) = TcpStream::connect(server) else {
                    continue;
                };
                let (client_in, upstream_out) =
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || pipe(client_in, upstream_out, None));
                let counter = counter.clone();
                std::thread::spawn(move || pipe(upstream, client, Some((after, hold, counter))));
            }
        });
        Self { addr, holding }
    }

    /// How many connections' replies are being held back now.
    pub fn holding(&self) -> usize {
        self.holding.load(Ordering::SeqCst)
    }
}

/// What a slow pipe holds back: after how many bytes, for how long, and
/// the count of pipes holding now.
type Slow = (usize, Duration, Arc<AtomicUsize>);

/// Copies `from` to `to` until either ends; with `slow`, pauses once when
/// more than its byte count has passed.
fn pipe(mut from: TcpStream, mut to: TcpStream, mut slow: Option<Slow>) {
    let mut buffer = vec![0; 64 << 10];
    let mut passed = 0;
    while let Ok(read) = from.read(&mut buffer) {
        if read == 0 {
            break;
        }
        passed += read;
        if let Some((after, hold, holding)) = &slow
            && passed > *after
        {
            holding.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(*hold);
            holding.fetch_sub(1, Ordering::SeqCst);
            slow = None;
        }
        if to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
