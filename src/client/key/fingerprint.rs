//! The request fingerprint: a SHA-256 that changes whenever the request
//! would be a different logical operation (method, URL, chosen headers,
//! body), framed as described in [`crate::shared::framing`].
//!
//! Credentials in the URL do not feed it: they change when tokens are
//! minted per attempt, and a new key on a re-run would run the operation
//! again. [`key_url`] is the URL without its user-info, and with the value
//! of every query parameter whose name marks a credential
//! ([`crate::shared::secret_names`]) left out: such a parameter feeds the
//! key by its name alone. A URL with neither is hashed exactly as sent.

use crate::client::input::body::{Body, HashingReader};
use crate::client::input::headers::Header;
use crate::shared::framing::FramedHasher;
use crate::shared::secret_names::is_secret_name;
use reqwest::header::HeaderName;
use std::borrow::Cow;

/// What the fingerprint covers.
pub struct Request<'a> {
    /// The method, already upper-case.
    pub method: &'a str,
    /// The URL as it is sent (after parsing and normalisation).
    pub url: &'a url::Url,
    /// Every header the request sends.
    pub headers: &'a [Header],
    /// The names chosen with `key-headers`.
    pub key_headers: &'a [HeaderName],
    /// The body, or `None` when `key-include-body` is false.
    pub body: Option<&'a Body>,
}

/// Computes the fingerprint: method; URL; the `key-headers` as
/// `name:value` lines sorted by name, joined with `\n`; body bytes (a file
/// body is hashed streaming, in constant memory).
pub fn fingerprint(request: &Request<'_>) -> std::io::Result<[u8; 32]> {
    fingerprint_and_file_digest(request).map(|(fingerprint, _)| fingerprint)
}

/// [`fingerprint`], and the plain SHA-256 of a file body taken in the same
/// pass (`None` when no file was read), which pins the bytes every attempt
/// must send.
pub fn fingerprint_and_file_digest(
    request: &Request<'_>,
) -> std::io::Result<([u8; 32], Option<[u8; 32]>)> {
    let mut file_digest = None;
    let mut hasher = FramedHasher::default();
    hasher
        .field(request.method.as_bytes())
        .field(key_url(request.url).as_bytes())
        .field(header_lines(request.headers, request.key_headers).as_bytes());
    match request.body {
        None | Some(Body::Empty) => {
            hasher.field(b"");
        }
        Some(Body::Bytes(bytes)) => {
            hasher.field(bytes);
        }
        Some(Body::File(file)) => {
            let mut reader = HashingReader::new(file.open()?);
            hasher
                .field_from_reader(file.len, &mut reader)
                .map_err(|e| match e.kind() {
                    // The length did not match: it changed while it was read.
                    std::io::ErrorKind::InvalidData => file.changed(e.to_string()),
                    _ => e,
                })?;
            file_digest = Some(reader.finish());
        }
    }
    Ok((hasher.finish(), file_digest))
}

/// The URL as it feeds the key: without user-info, and with each secret
/// query parameter reduced to its name (`?access_token=abc&env=prod` →
/// `?access_token&env=prod`). Every other byte is the URL as sent.
pub fn key_url(url: &url::Url) -> Cow<'_, str> {
    let secret_query = url.query().is_some_and(|query| {
        query
            .split('&')
            .any(|component| is_secret_name(component.split('=').next().unwrap_or("")))
    });
    if !url.has_authority()
        || (url.username().is_empty() && url.password().is_none() && !secret_query)
    {
        return Cow::Borrowed(url.as_str());
    }
    let mut keyed = url.clone();
    // Only URLs without a host refuse these setters, and they have no user-info.
    let _ = keyed.set_username("");
    let _ = keyed.set_password(None);
    if let Some(query) = url.query() {
        let kept: Vec<&str> = query
            .split('&')
            .map(|component| {
                let name = component.split('=').next().unwrap_or("");
                if is_secret_name(name) {
                    name
                } else {
                    component
                }
            })
            .collect();
        keyed.set_query(Some(&kept.join("&")));
    }
    Cow::Owned(keyed.into())
}

/// The `key-headers` part: for every chosen name (sorted), each value the
/// request sends under it, as `name:value`, joined with `\n`.
fn header_lines(headers: &[Header], chosen: &[HeaderName]) -> String {
    let mut names: Vec<&HeaderName> = chosen.iter().collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    let mut lines = Vec::new();
    for name in names {
        for (_, value) in headers.iter().filter(|(n, _)| n == name) {
            lines.push(format!(
                "{name}:{}",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::input::headers::parse_line;

    fn url() -> url::Url {
        "https://api.example/deployments?env=prod".parse().unwrap()
    }

    #[test]
    fn credentials_in_the_url_do_not_feed_the_key() {
        let keyed = |text: &str| key_url(&text.parse().unwrap()).into_owned();
        assert_eq!(
            keyed("https://ci:tok1@api.example/d?access_token=a1&env=prod&sig=x"),
            "https://api.example/d?access_token&env=prod&sig"
        );
        assert_eq!(
            keyed("https://ci:tok2@api.example/d?access_token=b2&env=prod&sig=y"),
            keyed("https://ci:tok1@api.example/d?access_token=a1&env=prod&sig=x")
        );
        // Everything else is hashed exactly as sent.
        let plain = "https://api.example/d?env=prod&x=%2F&&y";
        assert_eq!(keyed(plain), plain);
        assert_ne!(
            keyed("https://api.example/d?env=prod"),
            keyed("https://api.example/d?env=dev")
        );
        assert_ne!(
            keyed("https://api.example/d?token"),
            keyed("https://api.example/d")
        );
    }

    #[test]
    fn header_lines_are_sorted_and_only_chosen() {
        let headers = [
            parse_line("X-B: 2").unwrap(),
            parse_line("Authorization: Bearer t").unwrap(),
            parse_line("X-A: 1").unwrap(),
        ];
        let chosen = [
            HeaderName::from_static("x-b"),
            HeaderName::from_static("x-a"),
        ];
        assert_eq!(header_lines(&headers, &chosen), "x-a:1\nx-b:2");
        assert_eq!(header_lines(&headers, &[]), "");
    }

    #[test]
    fn fingerprint_changes_with_each_part_but_not_other_headers() {
        let body = Body::Bytes(b"{}".to_vec().into());
        let auth1 = [parse_line("Authorization: Bearer one").unwrap()];
        let auth2 = [parse_line("Authorization: Bearer two").unwrap()];
        let base = Request {
            method: "POST",
            url: &url(),
            headers: &auth1,
            key_headers: &[],
            body: Some(&body),
        };
        let reference = fingerprint(&base).unwrap();
        assert_eq!(
            fingerprint(&Request {
                headers: &auth2,
                ..base
            })
            .unwrap(),
            reference
        );
        assert_ne!(
            fingerprint(&Request {
                method: "PUT",
                ..base
            })
            .unwrap(),
            reference
        );
        let other_url = "https://api.example/deployments?env=dev".parse().unwrap();
        assert_ne!(
            fingerprint(&Request {
                url: &other_url,
                ..base
            })
            .unwrap(),
            reference
        );
        assert_ne!(
            fingerprint(&Request { body: None, ..base }).unwrap(),
            reference
        );
    }
}
