//! A small response body (a JWKS, an OIDC token) read into memory up to a
//! limit and no further, so a peer that sends without end cannot fill the
//! process's memory while the request's timeout runs.

use crate::shared::http_error::error_chain;

/// Why a bounded body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    /// It declared, or sent, more than the limit.
    #[error("it is larger than the {0} bytes allowed")]
    TooLarge(u64),
    /// It broke off; the cause in plain words, without the URL.
    #[error("it broke off: {0}")]
    BrokeOff(String),
}

/// Reads `response`'s body, refusing it as soon as its `Content-Length` or
/// the bytes received pass `limit`.
pub async fn read_at_most(
    mut response: reqwest::Response,
    limit: u64,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| BodyError::BrokeOff(error_chain(&e)))?
    {
        if (bytes.len() + chunk.len()) as u64 > limit {
            return Err(BodyError::TooLarge(limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}
