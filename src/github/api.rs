//! The GitHub REST calls the guard and the history need, made with
//! octocrab on top of the client's own reqwest client: one TLS stack (rustls
//! with ring), the same `HTTPS_PROXY`/`NO_PROXY` handling as every other
//! request, no redirects (the token goes to `GITHUB_API_URL` and nowhere
//! else), and `GITHUB_API_URL` as the base, so GitHub Enterprise Server
//! works as github.com does.

use super::history::Job;
use crate::shared::outside_text::one_line;
use std::time::{Duration, SystemTime};

/// Pages of 100 jobs read at most per attempt: a run has at most a few
/// hundred jobs, and a hostile `total_count` must not keep the client paging.
pub const MAX_PAGES: u32 = 10;

/// A client for this workflow run's endpoints.
pub struct Api {
    octocrab: octocrab::Octocrab,
    run: String,
}

/// Builds the reqwest client for GitHub endpoints (the API and the OIDC
/// token service): platform roots, environment proxies, no redirects.
pub fn http_client() -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("idempotent-request/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the GitHub API client: {e}"))
}

impl Api {
    /// A client for run `run_id` of `repository` (`owner/name`) at `api_url`.
    pub fn new(
        client: reqwest::Client,
        api_url: &str,
        token: &str,
        repository: &str,
        run_id: &str,
    ) -> Result<Self, String> {
        let octocrab = octocrab::Octocrab::builder()
            .base_uri(api_url)
            .map_err(|e| format!("GITHUB_API_URL `{api_url}` is not a usable URL: {e}"))?
            .personal_token(token.to_owned())
            .build_with_reqwest(client)
            .map_err(|e| format!("cannot build the GitHub API client: {e}"))?;
        Ok(Self {
            octocrab,
            run: format!("/repos/{repository}/actions/runs/{run_id}"),
        })
    }

    /// When the run's first attempt started (`run_started_at` of
    /// `GET …/actions/runs/{run_id}/attempts/1`).
    pub async fn first_attempt_started(&self) -> Result<SystemTime, String> {
        #[derive(serde::Deserialize)]
        struct RunAttempt {
            run_started_at: String,
        }
        let attempt: RunAttempt = self
            .octocrab
            .get(format!("{}/attempts/1", self.run), None::<&()>)
            .await
            .map_err(describe)?;
        let started =
            chrono::DateTime::parse_from_rfc3339(&attempt.run_started_at).map_err(|e| {
                format!(
                    "run_started_at `{}` is not a timestamp: {e}",
                    one_line(&attempt.run_started_at)
                )
            })?;
        Ok(SystemTime::from(started))
    }

    /// Every job of run attempt `attempt`, following pagination for at most
    /// [`MAX_PAGES`] pages.
    pub async fn jobs(&self, attempt: u32) -> Result<Vec<Job>, String> {
        #[derive(serde::Deserialize)]
        struct Page {
            total_count: usize,
            jobs: Vec<Job>,
        }
        let mut jobs = Vec::new();
        for page in 1..=MAX_PAGES {
            let query = [("per_page", "100".to_owned()), ("page", page.to_string())];
            let Page {
                total_count,
                jobs: batch,
            } = self
                .octocrab
                .get(
                    format!("{}/attempts/{attempt}/jobs", self.run),
                    Some(&query),
                )
                .await
                .map_err(describe)?;
            let empty = batch.is_empty();
            jobs.extend(batch);
            if empty || jobs.len() >= total_count {
                break;
            }
        }
        Ok(jobs)
    }
}

/// An API failure in words: the status and GitHub's message where there is
/// one. Never includes the token.
fn describe(error: octocrab::Error) -> String {
    match error {
        octocrab::Error::GitHub { source, .. } => {
            format!(
                "GitHub API answered HTTP {}: {}",
                source.status_code.as_u16(),
                one_line(&source.message)
            )
        }
        other => format!(
            "GitHub API request failed: {}",
            one_line(&other.to_string())
        ),
    }
}
