//! Which earlier attempts of this job exist and how they ended, for the log
//! and the step summary, so a reader sees at once that this request is a
//! replay candidate. Pure: the jobs come in from [`super::api`]. Their
//! fields are the API's text, so each passes through
//! [`crate::shared::outside_text::one_line`].

use crate::shared::outside_text::one_line;

/// One job of one run attempt, as the REST API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Job {
    /// The job's display name (matrix values included).
    pub name: String,
    /// `queued`, `in_progress`, `completed`, …
    pub status: String,
    /// `success`, `failure`, `cancelled`, … once completed.
    pub conclusion: Option<String>,
    /// The runner it ran on.
    pub runner_name: Option<String>,
    /// When it started (RFC 3339).
    pub started_at: Option<String>,
}

/// This job in the current attempt: the in-progress job on this runner.
pub fn current_job<'a>(jobs: &'a [Job], runner_name: Option<&str>) -> Option<&'a Job> {
    jobs.iter().find(|j| {
        j.status == "in_progress"
            && runner_name.is_some()
            && j.runner_name.as_deref() == runner_name
    })
}

/// Lines describing each earlier attempt's run of the job named `job_name`.
pub fn describe(earlier: &[(u32, Vec<Job>)], job_name: &str) -> Vec<String> {
    earlier
        .iter()
        .map(
            |(attempt, jobs)| match jobs.iter().find(|j| j.name == job_name) {
                Some(job) => {
                    // Every field is the API's text: one inert line each.
                    let ended = match (&job.status[..], &job.conclusion) {
                        ("completed", Some(conclusion)) => one_line(conclusion),
                        (status, _) => one_line(status),
                    };
                    let started = job
                        .started_at
                        .as_deref()
                        .map_or_else(|| "unknown time".to_owned(), one_line);
                    format!("attempt {attempt}: {ended} (started {started})")
                }
                None => format!("attempt {attempt}: this job did not run"),
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, status: &str, conclusion: Option<&str>, runner: &str) -> Job {
        Job {
            name: name.into(),
            status: status.into(),
            conclusion: conclusion.map(Into::into),
            runner_name: Some(runner.into()),
            started_at: Some("2026-11-20T10:00:00Z".into()),
        }
    }

    #[test]
    fn the_current_job_is_the_one_in_progress_on_this_runner() {
        let jobs = [
            job("build", "completed", Some("success"), "r1"),
            job("deploy (eu)", "in_progress", None, "r2"),
            job("deploy (us)", "in_progress", None, "r3"),
        ];
        assert_eq!(current_job(&jobs, Some("r2")).unwrap().name, "deploy (eu)");
        assert_eq!(current_job(&jobs, None), None);
    }

    #[test]
    fn earlier_attempts_are_described() {
        let earlier = vec![
            (
                1,
                vec![job("deploy (eu)", "completed", Some("failure"), "r9")],
            ),
            (2, vec![job("build", "completed", Some("failure"), "r9")]),
        ];
        assert_eq!(
            describe(&earlier, "deploy (eu)"),
            [
                "attempt 1: failure (started 2026-11-20T10:00:00Z)",
                "attempt 2: this job did not run"
            ]
        );
    }
}
