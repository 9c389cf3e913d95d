//! A GitHub OIDC token for `oidc-audience`, sent as the request's
//! `Authorization: Bearer`. The runner exposes the token service as
//! `ACTIONS_ID_TOKEN_REQUEST_URL` (with its own bearer,
//! `ACTIONS_ID_TOKEN_REQUEST_TOKEN`) only to jobs granted
//! `permissions: id-token: write`. The token is fetched after the key is
//! derived, so it never feeds the key.

use crate::shared::env::Env;

const PERMISSION_HINT: &str = "add `permissions: id-token: write` to the job (or the workflow)";

/// Requests a token for `audience` from the runner's token service.
pub async fn token(client: &reqwest::Client, env: &Env, audience: &str) -> Result<String, String> {
    let (Some(url), Some(bearer)) = (
        env.get("ACTIONS_ID_TOKEN_REQUEST_URL"),
        env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
    ) else {
        return Err(format!(
            "oidc-audience is set, but this job cannot request an OIDC token \
             (ACTIONS_ID_TOKEN_REQUEST_URL is not set): {PERMISSION_HINT}"
        ));
    };
    let mut url = url::Url::parse(url)
        .map_err(|e| format!("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL: {e}"))?;
    url.query_pairs_mut().append_pair("audience", audience);
    let response = client
        .get(url)
        .bearer_auth(bearer)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("the OIDC token request failed: {}", e.without_url()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!(
            "the OIDC token service answered HTTP {}; if the job lacks it, {PERMISSION_HINT}",
            status.as_u16()
        ));
    }
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        value: String,
    }
    let body: TokenResponse = serde_json::from_slice(
        &response
            .bytes()
            .await
            .map_err(|e| format!("the OIDC token response broke off: {}", e.without_url()))?,
    )
    .map_err(|_| "the OIDC token service did not answer with a token".to_owned())?;
    if body.value.is_empty() || body.value.contains(['\r', '\n']) {
        return Err("the OIDC token service answered with an unusable token".to_owned());
    }
    Ok(body.value)
}
