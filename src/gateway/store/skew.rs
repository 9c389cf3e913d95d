//! How far this host's clock is from the shared store server's, read once
//! at start-up. Replicas compare leases and expiry times written by each
//! other with their own clocks, so clocks apart by seconds end leases and
//! records early on one of them; each replica measured against the one
//! server bounds how far any two are apart.

use std::time::{SystemTime, UNIX_EPOCH};

/// How far apart the clocks may be before start-up warns.
pub const TOLERATED_MS: u64 = 1_000;

/// Milliseconds since the Unix epoch on this host's clock.
pub fn local_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The server's clock minus this host's, when more than [`TOLERATED_MS`]
/// apart: `server_ms` was read by the server somewhere between `sent_ms`
/// and `received_ms` of this host's clock, so only the distance from that
/// interval is certain.
pub fn beyond_tolerance(sent_ms: u64, server_ms: u64, received_ms: u64) -> Option<i128> {
    let (sent, server, received) = (
        i128::from(sent_ms),
        i128::from(server_ms),
        i128::from(received_ms),
    );
    let tolerated = i128::from(TOLERATED_MS);
    if server < sent - tolerated {
        Some(server - sent)
    } else if server > received + tolerated {
        Some(server - received)
    } else {
        None
    }
}

/// Warns when the `store` server's clock, read as `server_ms` between
/// `sent_ms` and `received_ms` of this host's, is apart from it beyond
/// [`beyond_tolerance`].
pub fn warn_if_apart(store: &str, sent_ms: u64, server_ms: u64, received_ms: u64) {
    let Some(skew_ms) = beyond_tolerance(sent_ms, server_ms, received_ms) else {
        return;
    };
    let direction = if skew_ms > 0 { "behind" } else { "ahead of" };
    tracing::warn!(
        "this host's clock is at least {} ms {direction} the {store} server's: replicas \
         compare leases and expiry times by their own clocks, so keep every replica's \
         clock synchronised (NTP)",
        skew_ms.unsigned_abs()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_skew_beyond_the_round_trip_and_the_tolerance_counts() {
        // Read within the round trip, or within a second of it.
        assert_eq!(beyond_tolerance(10_000, 10_005, 10_010), None);
        assert_eq!(beyond_tolerance(10_000, 9_000, 10_010), None);
        assert_eq!(beyond_tolerance(10_000, 11_010, 10_010), None);
        // A slow round trip widens what cannot be told apart.
        assert_eq!(beyond_tolerance(10_000, 12_000, 15_000), None);
        // The server ahead, or behind, by more.
        assert_eq!(beyond_tolerance(10_000, 15_000, 10_010), Some(4_990));
        assert_eq!(beyond_tolerance(10_000, 5_000, 10_010), Some(-5_000));
        assert_eq!(
            beyond_tolerance(0, u64::MAX, 1),
            Some(i128::from(u64::MAX) - 1)
        );
    }
}
