//! The printable form of a URL: user-info removed, every query value
//! replaced, fragment dropped. Used for every log line and the summary.

use url::Url;

/// Returns `url` with credentials and query values hidden.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    // Both setters only fail for URLs that cannot have credentials, which
    // then have none to remove.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_fragment(None);
    if url.query().is_some() {
        let names: Vec<String> = url
            .query_pairs()
            .map(|(name, _)| name.into_owned())
            .collect();
        shown.set_query(None);
        if !names.is_empty() {
            let mut pairs = shown.query_pairs_mut();
            for name in &names {
                pairs.append_pair(name, "REDACTED");
            }
        }
    }
    shown.to_string()
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
    fn plain_urls_are_unchanged() {
        let url: Url = "http://127.0.0.1:8080/hooks".parse().unwrap();
        assert_eq!(redact_url(&url), "http://127.0.0.1:8080/hooks");
    }
}
