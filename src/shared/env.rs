//! A snapshot of the process environment, taken once at start-up and passed
//! down explicitly so that the core never reads global state and tests can
//! supply any environment they like.

use std::collections::BTreeMap;

/// Environment variables by name. Empty values count as unset.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// Captures the current process environment (non-UTF-8 entries are
    /// skipped: no input or CI variable the tool reads may hold them).
    pub fn from_process() -> Self {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    }

    /// The value of `name`, or `None` when it is unset or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Whether `name` is set to `true`, as CI systems set their flags.
    pub fn is_true(&self, name: &str) -> bool {
        self.get(name) == Some("true")
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Env {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            vars: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_count_as_unset() {
        let env: Env = [("A", ""), ("B", "x")].into_iter().collect();
        assert_eq!(env.get("A"), None);
        assert_eq!(env.get("B"), Some("x"));
        assert_eq!(env.get("C"), None);
    }
}
