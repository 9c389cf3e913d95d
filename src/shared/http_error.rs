//! A reqwest error described in plain words, without the URL (it may hold
//! credentials): the client's attempt log and the gateway's upstream errors
//! both use it. Its causes' texts can come from the peer (HTTP/2 GOAWAY
//! debug data, TLS alerts), so the description is one inert line
//! ([`crate::shared::outside_text::one_line`]).

use crate::shared::outside_text::one_line;

/// The error and its causes, outermost first. An `io::Error` is entered
/// through `get_ref()`, because its `source()` skips the error it wraps
/// (and the TLS stream nests one `io::Error` inside another).
pub fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |&e: &&'a (dyn std::error::Error + 'static)| {
        match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        }
    })
}

/// The messages of the error's causes after the first, joined by `: `
/// (the top-level reqwest message only says which phase failed), never
/// with the URL, as one inert line.
pub fn error_chain(error: &reqwest::Error) -> String {
    one_line(&raw_chain(error))
}

/// Any error and its causes, outermost first, joined by `: ` (a message
/// already contained in an earlier one is left out), as one inert line.
/// For errors that carry no URL (hyper's, the gateway's upstream client).
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in causes(error) {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    one_line(&parts.join(": "))
}

fn raw_chain(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in causes(error).skip(1) {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    match (parts.is_empty(), error.url()) {
        (false, _) => parts.join(": "),
        // reqwest's own message names the URL, which may hold credentials.
        (true, Some(url)) => error.to_string().replace(&format!(" for url ({url})"), ""),
        (true, None) => error.to_string(),
    }
}
