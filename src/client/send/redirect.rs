//! Whether and where to follow a redirect (RFC 9110 §15.4), as a pure
//! function of the request, the status and the `Location` header.
//!
//! Unsafe methods follow only 307/308, which keep method and body: a 301,
//! 302 or 303 would turn a POST into a GET and silently drop the operation.
//! GET and HEAD follow every redirect status. An https URL is never
//! redirected to plain http.

use reqwest::Method;
use url::Url;

/// At most this many redirects are followed in one attempt.
pub const MAX_REDIRECTS: usize = 10;

/// The decision for one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hop {
    /// Not a redirect to follow: the response is the attempt's result.
    Final,
    /// Not followed, for the reason given (logged); the response is final.
    Refused(String),
    /// Send the next request here.
    Follow {
        /// The method of the next request.
        method: Method,
        /// Its URL.
        url: Url,
        /// Whether the body goes along (307/308).
        keep_body: bool,
    },
}

/// Decides what a `status` response with `location` means for a `method`
/// request to `current`.
pub fn next_hop(method: &Method, status: u16, current: &Url, location: Option<&str>) -> Hop {
    let same_method = match status {
        307 | 308 => true,
        301..=303 if *method == Method::GET || *method == Method::HEAD => false,
        301..=303 => {
            return Hop::Refused(format!(
                "a {status} redirect would turn {method} into GET; only 307 and 308 are followed for {method}"
            ));
        }
        _ => return Hop::Final,
    };
    let Some(location) = location else {
        return Hop::Refused(format!("the {status} response has no Location header"));
    };
    let url = match current.join(location) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        _ => return Hop::Refused("the Location header is not an http(s) URL".to_owned()),
    };
    if current.scheme() == "https" && url.scheme() == "http" {
        return Hop::Refused("refusing to follow a redirect from https to http".to_owned());
    }
    let method = if same_method || *method == Method::HEAD {
        method.clone()
    } else {
        Method::GET
    };
    Hop::Follow {
        method,
        url,
        keep_body: same_method,
    }
}

/// Whether `a` and `b` share scheme, host and port (RFC 6454 origin).
pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.origin() == b.origin()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        text.parse().unwrap()
    }

    #[test]
    fn temporary_and_permanent_keep_method_and_body() {
        for status in [307, 308] {
            assert_eq!(
                next_hop(&Method::POST, status, &url("https://a/x"), Some("/y")),
                Hop::Follow {
                    method: Method::POST,
                    url: url("https://a/y"),
                    keep_body: true
                }
            );
        }
    }

    #[test]
    fn unsafe_methods_refuse_method_changing_redirects() {
        for status in [301, 302, 303] {
            assert!(matches!(
                next_hop(&Method::POST, status, &url("https://a/x"), Some("/y")),
                Hop::Refused(_)
            ));
        }
    }

    #[test]
    fn get_and_head_follow_everything() {
        assert_eq!(
            next_hop(&Method::GET, 302, &url("https://a/x"), Some("https://b/z")),
            Hop::Follow {
                method: Method::GET,
                url: url("https://b/z"),
                keep_body: false
            }
        );
        assert!(matches!(
            next_hop(&Method::HEAD, 303, &url("https://a/x"), Some("/z")),
            Hop::Follow { method, .. } if method == Method::HEAD
        ));
    }

    #[test]
    fn other_statuses_are_final() {
        assert_eq!(
            next_hop(&Method::GET, 200, &url("https://a/"), None),
            Hop::Final
        );
        assert_eq!(
            next_hop(&Method::GET, 304, &url("https://a/"), None),
            Hop::Final
        );
    }

    #[test]
    fn bad_locations_and_downgrades_are_refused() {
        let from = url("https://a/x");
        assert!(matches!(
            next_hop(&Method::GET, 302, &from, None),
            Hop::Refused(_)
        ));
        assert!(matches!(
            next_hop(&Method::GET, 302, &from, Some("ftp://b/")),
            Hop::Refused(_)
        ));
        assert!(matches!(
            next_hop(&Method::GET, 302, &from, Some("http://a/x")),
            Hop::Refused(_)
        ));
    }

    #[test]
    fn origins() {
        assert!(same_origin(&url("https://a/x"), &url("https://a:443/y")));
        assert!(!same_origin(&url("https://a/"), &url("https://b/")));
        assert!(!same_origin(&url("http://a/"), &url("https://a/")));
        assert!(!same_origin(&url("http://a:1/"), &url("http://a:2/")));
    }
}
