//! The request fingerprint: a SHA-256 that changes whenever the request
//! would be a different logical operation (method, URL, chosen headers,
//! body), framed as described in [`crate::shared::framing`].

use crate::client::input::body::Body;
use crate::client::input::headers::Header;
use crate::shared::framing::FramedHasher;
use reqwest::header::HeaderName;

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
    let mut hasher = FramedHasher::default();
    hasher
        .field(request.method.as_bytes())
        .field(request.url.as_str().as_bytes())
        .field(header_lines(request.headers, request.key_headers).as_bytes());
    match request.body {
        None | Some(Body::Empty) => {
            hasher.field(b"");
        }
        Some(Body::Bytes(bytes)) => {
            hasher.field(bytes);
        }
        Some(Body::File(file)) => {
            hasher.field_from_reader(file.len, file.open()?)?;
        }
    }
    Ok(hasher.finish())
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
