//! The process's file-descriptor limit, fitted to `--max-connections` at
//! start-up.
//!
//! Each client connection takes a descriptor, and each forward a second
//! one for its upstream connection. A process that runs out cannot accept:
//! new connections then wait in the listen queue unanswered, behind every
//! idle one, instead of getting the documented `503`. So the soft limit is
//! raised to the hard limit (as Go's runtime and nginx's
//! `worker_rlimit_nofile` do), and when even that cannot hold
//! `--max-connections` the limit of connections is lowered to what it can
//! hold, with a warning that says how to raise it.

use super::server::{Limits, MAX_REFUSING};

/// Descriptors kept for everything but connections: the listeners, stdio,
/// the runtime's epoll and wake-up descriptors, SQLite's files (the
/// writer's and the checkpointer's), a PostgreSQL pool of 16, JWKS
/// fetches, and the admin listener's 16 connections
/// (`super::admin::MAX_CONNECTIONS`).
pub const RESERVED: u64 = 64;

/// Descriptors one client connection may need: its own, and its forward's
/// upstream connection.
pub const PER_CONNECTION: u64 = 2;

/// Descriptors of connections over `--max-connections` while they are
/// answered `503` ([`MAX_REFUSING`] at most).
pub const REFUSING: u64 = MAX_REFUSING as u64;

/// The most connections `descriptors` can serve (at least one).
pub fn connections_within(descriptors: u64) -> usize {
    let spare = descriptors.saturating_sub(RESERVED + REFUSING) / PER_CONNECTION;
    usize::try_from(spare).unwrap_or(usize::MAX).max(1)
}

/// What [`fit`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fitted {
    /// The limits to serve with.
    pub limits: Limits,
    /// The soft descriptor limit after raising it, when it could be read.
    pub descriptors: Option<u64>,
    /// `--max-connections` as given, when it had to be lowered.
    pub lowered_from: Option<usize>,
}

/// `limits` with `max_connections` lowered to what `descriptors` can
/// serve, if it must be.
pub fn fit_to(limits: Limits, descriptors: Option<u64>) -> Fitted {
    let within = descriptors.map_or(usize::MAX, connections_within);
    let lowered_from = (limits.max_connections > within).then_some(limits.max_connections);
    Fitted {
        limits: Limits {
            max_connections: limits.max_connections.min(within),
            ..limits
        },
        descriptors,
        lowered_from,
    }
}

/// Raises the soft descriptor limit to the hard one and fits `limits` to
/// it. `None` descriptors where the limit cannot be read (no such limit on
/// this platform): `limits` unchanged.
pub fn fit(limits: Limits) -> Fitted {
    fit_to(limits, raise_soft_limit())
}

/// Sets the soft `RLIMIT_NOFILE` to the hard one (or macOS's per-process
/// cap); the soft limit after that, `None` when it cannot be read.
fn raise_soft_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_counts_two_descriptors_beyond_the_reserve_and_the_refusals() {
        assert_eq!(connections_within(1024), 464);
        assert_eq!(connections_within(RESERVED + REFUSING + 2 * 4096), 4096);
        // Too few for even one: still one, so the gateway can serve at all.
        assert_eq!(connections_within(10), 1);
    }

    #[test]
    fn max_connections_is_lowered_only_when_the_descriptors_cannot_hold_it() {
        let limits = Limits::default();
        let roomy = fit_to(limits, Some(1 << 20));
        assert_eq!(roomy.limits, limits);
        assert_eq!(roomy.lowered_from, None);
        let tight = fit_to(limits, Some(1024));
        assert_eq!(tight.limits.max_connections, 464);
        assert_eq!(tight.lowered_from, Some(4096));
        assert_eq!(
            Limits {
                max_connections: limits.max_connections,
                ..tight.limits
            },
            limits,
            "nothing but the connections changes"
        );
        let unknown = fit_to(limits, None);
        assert_eq!((unknown.limits, unknown.lowered_from), (limits, None));
    }

    #[cfg(unix)]
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let raised = raise_soft_limit().expect("Unix has RLIMIT_NOFILE");
        let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
        assert_eq!((raised, soft), (hard, hard));
    }
}
