//! What each open client connection is doing, for its watchdog and for the
//! accept loop: plain flags and counters that serving a request sets (no
//! clock read, no lock), and the registry of open connections that the
//! accept loop asks, at `--max-connections`, which connection is idle the
//! longest and may be closed to make room, as nginx reuses its keep-alive
//! connections when it runs out of them.

use super::head_timer::Reads;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// The order in which connections became idle, across the process: a
/// connection idle since a smaller number has been idle longer. A counter
/// rather than a clock, so a request's end costs no clock read.
static IDLE_ORDER: AtomicU64 = AtomicU64::new(0);

fn next_idle_order() -> u64 {
    IDLE_ORDER.fetch_add(1, Ordering::Relaxed)
}

/// What one connection shares with its watchdog and the registry.
#[derive(Debug)]
pub struct Activity {
    /// Set whenever bytes are read or written; cleared by the watchdog.
    pub moved: AtomicBool,
    /// The reads that returned bytes (for the header timer too): until
    /// the first, the connection is silent.
    pub reads: Arc<Reads>,
    /// Requests being answered now.
    pub in_flight: AtomicUsize,
    /// Requests begun on this connection.
    pub begun: AtomicUsize,
    /// When the connection last became idle, as [`IDLE_ORDER`] counts
    /// (its accept, or its last request's end).
    idle_since: AtomicU64,
    /// Chosen by the registry to make room: asked to close.
    chosen: AtomicBool,
    /// The watchdog's or the registry's verdict, to the connection.
    pub verdict: Notify,
    /// What the verdict is: `true` to drop the connection at once (no
    /// request head yet, or an answer that does not move after the close
    /// was asked), `false` to close it gracefully (idle).
    pub drop_now: AtomicBool,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            moved: AtomicBool::new(false),
            reads: Arc::default(),
            in_flight: AtomicUsize::new(0),
            begun: AtomicUsize::new(0),
            idle_since: AtomicU64::new(next_idle_order()),
            chosen: AtomicBool::new(false),
            verdict: Notify::new(),
            drop_now: AtomicBool::new(false),
        }
    }
}

impl Activity {
    /// A request has begun: counted until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.begun.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Whether closing the connection now loses nothing a client asked
    /// for: no request is being answered, and it is either silent or
    /// between requests. A first request head that has begun to arrive is
    /// not (its client is sending a request); an answer still being written
    /// is finished by the graceful close.
    fn closable(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && (self.begun.load(Ordering::Relaxed) > 0 || self.reads.none())
    }
}

/// Counts a request as in flight while it is being answered.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .idle_since
            .store(next_idle_order(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.moved.store(true, Ordering::Relaxed);
    }
}

/// The open connections, by a number of their own.
#[derive(Debug, Default)]
pub struct Registry {
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next: AtomicU64,
}

impl Registry {
    /// Registers a connection until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>, activity: Arc<Activity>) -> Entered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, activity);
        Entered {
            registry: self.clone(),
            id,
        }
    }

    /// Asks the closable connection idle the longest to close gracefully
    /// (hyper closes an idle one at once); `false` when none is closable.
    pub fn close_idlest(&self) -> bool {
        // One pass, no sort: at the limit a flood of new connections asks
        // once each. `chosen` is only set under the lock, so none is chosen
        // twice.
        let open = self.lock();
        let Some(chosen) = open
            .values()
            .filter(|activity| !activity.chosen.load(Ordering::Relaxed) && activity.closable())
            .min_by_key(|activity| activity.idle_since.load(Ordering::Relaxed))
        else {
            return false;
        };
        chosen.chosen.store(true, Ordering::Relaxed);
        chosen.verdict.notify_one();
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A connection's place in the [`Registry`], left when dropped.
#[derive(Debug)]
pub struct Entered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entered(registry: &Arc<Registry>) -> (Arc<Activity>, Entered) {
        let activity = Arc::new(Activity::default());
        let entered = registry.enter(activity.clone());
        (activity, entered)
    }

    fn chosen(activity: &Activity) -> bool {
        activity.chosen.load(Ordering::Relaxed)
    }

    #[test]
    fn the_connection_idle_the_longest_is_chosen_first() {
        let registry = Arc::new(Registry::default());
        let (first, _a) = entered(&registry);
        let (second, _b) = entered(&registry);
        let (third, _c) = entered(&registry);
        // The first ends a request now: it is the most recently idle.
        first.reads.count();
        drop(first.begin());
        assert!(registry.close_idlest());
        assert!(chosen(&second) && !chosen(&first) && !chosen(&third));
        assert!(registry.close_idlest());
        assert!(chosen(&third) && !chosen(&first));
        assert!(registry.close_idlest());
        assert!(chosen(&first));
        assert!(!registry.close_idlest(), "each is chosen once");
    }

    #[test]
    fn connections_in_a_request_or_sending_their_first_head_are_never_chosen() {
        let registry = Arc::new(Registry::default());
        let (busy, _a) = entered(&registry);
        busy.reads.count();
        let request = busy.begin();
        let (sending, _b) = entered(&registry);
        sending.reads.count();
        assert!(!registry.close_idlest());
        drop(request);
        assert!(registry.close_idlest(), "between requests it may be closed");
        assert!(chosen(&busy) && !chosen(&sending));
    }

    #[test]
    fn a_closed_connection_leaves_the_registry() {
        let registry = Arc::new(Registry::default());
        let (_activity, entered) = entered(&registry);
        drop(entered);
        assert!(!registry.close_idlest());
        assert!(registry.lock().is_empty());
    }
}
