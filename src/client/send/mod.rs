//! Stage 3, the retry loop: the policy decides, the transport acts.
//! [`retry`] is the pure decision (`decide(outcome) -> Retry | Stop`), with
//! [`retry_after`] and [`backoff`] supplying waits and [`redirect`] the pure
//! redirect rule; [`retry_loop`] runs attempts and sleeps through tokio's
//! clock; [`transport`] is the only module that talks HTTP.

pub mod backoff;
pub mod redirect;
pub mod retry;
pub mod retry_after;
pub mod retry_loop;
pub mod transport;
