//! How long one call of a networked store (PostgreSQL, Redis) may take.
//!
//! A call that moves a small record gets [`CALL_TIMEOUT`]. A call that
//! moves a large answer (over [`INLINE_OUTCOME`] bytes: a finish that
//! stores one, a load that reads one) also gets the time to move it at
//! [`BULK_BYTES_PER_SECOND`], so answers up to `--max-body` are stored and
//! replayed, not cut off at 2 s whatever their size.

use super::INLINE_OUTCOME;
use std::time::Duration;

/// The longest a call that moves a small record may take, connection
/// included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The slowest rate at which a large answer is expected to reach the
/// server or come back from it: 8 s more for 256 MiB, the largest
/// `--max-body`.
pub const BULK_BYTES_PER_SECOND: f64 = 32.0 * 1024.0 * 1024.0;

/// Whether a call that moves `bytes` of an answer is a large one, given
/// more than [`CALL_TIMEOUT`].
pub fn is_large(bytes: usize) -> bool {
    bytes > INLINE_OUTCOME
}

/// How long a call that moves `bytes` of an answer may take:
/// [`CALL_TIMEOUT`], and for a large one the time to move it at
/// [`BULK_BYTES_PER_SECOND`].
pub fn allowance(bytes: usize) -> Duration {
    if !is_large(bytes) {
        return CALL_TIMEOUT;
    }
    CALL_TIMEOUT + Duration::from_secs_f64(bytes as f64 / BULK_BYTES_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_answer_is_given_the_time_to_move_it() {
        assert_eq!(allowance(0), CALL_TIMEOUT);
        assert_eq!(allowance(INLINE_OUTCOME), CALL_TIMEOUT);
        assert!(!is_large(INLINE_OUTCOME));
        assert!(is_large(INLINE_OUTCOME + 1));
        assert!(allowance(INLINE_OUTCOME + 1) > CALL_TIMEOUT);
        let largest = allowance(256 << 20);
        assert_eq!(largest, CALL_TIMEOUT + Duration::from_secs(8));
    }
}
