//! The re-run guard: a re-run may come up to 30 days after the first
//! attempt, long after many servers forget a key (Stripe keeps them 24
//! hours); re-sending then silently duplicates the operation. With
//! `key-ttl` set and scope `run`, a re-run whose first attempt started more
//! than `key-ttl` ago is refused, and so is one whose age cannot be
//! determined, unless `allow-expired-key` is true. Pure: the age is passed in.

use std::time::Duration;

/// Whether the guard applies: a re-run (attempt > 1) that sends the same
/// key as the first attempt (scope `run`), and a `key-ttl` to compare with.
/// Only then is the API asked anything.
pub fn applies(run_attempt: u32, same_key_on_rerun: bool, key_ttl: Option<Duration>) -> bool {
    run_attempt > 1 && same_key_on_rerun && key_ttl.is_some()
}

/// What is known about the first attempt's age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Age {
    /// Time since the first attempt started.
    Known(Duration),
    /// Why it could not be determined (no token, API error, permission).
    Unknown(String),
}

/// The guard's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send: the key is younger than `key-ttl`.
    Send,
    /// Send, but say why it may be unsafe (`allow-expired-key`).
    SendAnyway(String),
    /// Refuse (exit 4), with the explanation and the choices.
    Refuse(String),
}

fn show(duration: Duration) -> String {
    let hours = duration.as_secs() / 3600;
    if hours >= 48 {
        format!("{} days", hours / 24)
    } else if hours >= 1 {
        format!("{hours} hours")
    } else {
        format!("{} minutes", duration.as_secs() / 60)
    }
}

/// Judges a re-run whose first attempt has `age`.
pub fn judge(age: &Age, key_ttl: Duration, allow_expired: bool) -> Verdict {
    let risk = match age {
        Age::Known(age) if *age <= key_ttl => return Verdict::Send,
        Age::Known(age) => format!(
            "This is a re-run, and the run's first attempt started {} ago, longer than key-ttl ({}): \
             the server has probably forgotten the idempotency key, so sending again could perform \
             the operation twice.",
            show(*age),
            show(key_ttl)
        ),
        Age::Unknown(why) => format!(
            "This is a re-run, and the age of the run's first attempt could not be determined ({why}), \
             so it is unknown whether the server still remembers the idempotency key; sending again \
             could perform the operation twice. Grant the job `permissions: actions: read` (and pass \
             `github-token`) so the age can be checked."
        ),
    };
    let choices = "Choices: check on the server whether the operation already happened; start a new \
                   workflow run instead of re-running this one; or set allow-expired-key: true to send anyway.";
    if allow_expired {
        Verdict::SendAnyway(format!(
            "{risk} Sending anyway because allow-expired-key is true."
        ))
    } else {
        Verdict::Refuse(format!("{risk} Nothing was sent. {choices}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn applies_only_to_run_scoped_reruns_with_a_ttl() {
        assert!(applies(2, true, Some(DAY)));
        assert!(!applies(1, true, Some(DAY)));
        assert!(!applies(2, false, Some(DAY)));
        assert!(!applies(2, true, None));
    }

    #[test]
    fn younger_than_the_ttl_is_sent() {
        assert_eq!(judge(&Age::Known(DAY / 2), DAY, false), Verdict::Send);
        assert_eq!(judge(&Age::Known(DAY), DAY, false), Verdict::Send);
    }

    #[test]
    fn older_than_the_ttl_is_refused_with_the_choices() {
        let Verdict::Refuse(message) = judge(&Age::Known(DAY * 3), DAY, false) else {
            panic!("not refused");
        };
        assert!(message.contains("3 days ago"), "{message}");
        assert!(message.contains("key-ttl (24 hours)"), "{message}");
        assert!(message.contains("allow-expired-key: true"), "{message}");
        assert!(message.contains("Nothing was sent"), "{message}");
    }

    #[test]
    fn unknown_age_is_refused_naming_the_permission() {
        let Verdict::Refuse(message) = judge(&Age::Unknown("HTTP 403".into()), DAY, false) else {
            panic!("not refused");
        };
        assert!(
            message.contains("HTTP 403") && message.contains("actions: read"),
            "{message}"
        );
    }

    #[test]
    fn allow_expired_key_sends_with_a_warning() {
        assert!(matches!(
            judge(&Age::Known(DAY * 3), DAY, true),
            Verdict::SendAnyway(_)
        ));
        assert!(matches!(
            judge(&Age::Unknown("no token".into()), DAY, true),
            Verdict::SendAnyway(_)
        ));
    }
}
