//! The printable form of a URL: user-info removed, every query component's
//! value replaced (a component without `=` is replaced whole: it may be a
//! bare token), fragment dropped. The client uses it for every log line and
//! the summary, the gateway for its `--upstream` and `--store` URLs.

use url::Url;

/// What a hidden value is replaced by.
pub const REDACTED: &str = "REDACTED";

/// Returns `url` with credentials and query values hidden.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    // Both setters only fail for URLs that cannot have credentials, which
    // then have none to remove.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_fragment(None);
    if let Some(query) = url.query() {
        let hidden: Vec<String> = query
            .split('&')
            .filter(|component| !component.is_empty())
            .map(|component| match component.split_once('=') {
                Some((name, _)) => format!("{name}={REDACTED}"),
                None => REDACTED.to_owned(),
            })
            .collect();
        shown.set_query(
            Some(&hidden.join("&"))
                .filter(|q| !q.is_empty())
                .map(String::as_str),
        );
    }
    shown.to_string()
}

/// `text` parsed as a URL and redacted, or a placeholder when it does not
/// parse (it is then never shown: it may still hold a credential).
pub fn redact_url_text(text: &str) -> String {
    Url::parse(text).map_or_else(
        |_| "(an unparsable URL, not shown)".to_owned(),
        |u| redact_url(&u),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_query_values_are_hidden() {
        let url: Url = "https://user:pa55@api.example/v1/deploy?token=s3cret&env=prod#frag"
            .parse()
            .unwrap();
        let shown = redact_url(&url);
        assert_eq!(
            shown,
            "https://api.example/v1/deploy?token=REDACTED&env=REDACTED"
        );
        for secret in ["user", "pa55", "s3cret", "prod", "frag"] {
            assert!(!shown.contains(secret), "{secret} leaked");
        }
    }

    #[test]
    fn components_without_a_value_are_hidden_whole() {
        let url: Url = "https://api.example/hook?ghp_s3cretvalue&&a=1&=x"
            .parse()
            .unwrap();
        let shown = redact_url(&url);
        assert_eq!(
            shown,
            "https://api.example/hook?REDACTED&a=REDACTED&=REDACTED"
        );
        assert!(!shown.contains("s3cret"));
    }

    #[test]
    fn plain_urls_are_unchanged() {
        let url: Url = "http://127.0.0.1:8080/hooks".parse().unwrap();
        assert_eq!(redact_url(&url), "http://127.0.0.1:8080/hooks");
    }

    #[test]
    fn store_urls_lose_their_passwords() {
        assert_eq!(
            redact_url_text("postgres://gw:pa55@db.internal:5432/idem"),
            "postgres://db.internal:5432/idem"
        );
        assert_eq!(
            redact_url_text("redis://:pa55@127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert!(!redact_url_text("not a url pa55").contains("pa55"));
    }
}
