//! Sets of HTTP status codes written as `200-299,304`, used by
//! `accept-status` and `retry-on-status`.

/// A set of status codes given as codes and inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet {
    ranges: Vec<(u16, u16)>,
}

impl StatusSet {
    /// The empty set (`none`).
    pub fn none() -> Self {
        Self { ranges: Vec::new() }
    }

    /// Parses a comma-separated list of codes (`503`) and ranges
    /// (`500-599`), each within 100-599, or the word `none`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.eq_ignore_ascii_case("none") {
            return Ok(Self::none());
        }
        let ranges = text
            .split(',')
            .map(str::trim)
            .map(|item| {
                let (low, high) = item.split_once('-').unwrap_or((item, item));
                match (parse_code(low.trim()), parse_code(high.trim())) {
                    (Some(low), Some(high)) if low <= high => Ok((low, high)),
                    _ => Err(format!(
                        "`{item}` is not a status code (100-599) or a range such as 500-599"
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { ranges })
    }

    /// Whether `code` is in the set.
    pub fn contains(&self, code: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(low, high)| (low..=high).contains(&code))
    }
}

fn parse_code(text: &str) -> Option<u16> {
    text.parse::<u16>()
        .ok()
        .filter(|code| (100..=599).contains(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_ranges() {
        let set = StatusSet::parse("200-299, 304").unwrap();
        assert!(set.contains(200) && set.contains(299) && set.contains(304));
        assert!(!set.contains(300) && !set.contains(199));
    }

    #[test]
    fn none_is_empty() {
        let set = StatusSet::parse("NONE").unwrap();
        assert!((100..600).all(|code| !set.contains(code)));
    }

    #[test]
    fn junk_is_rejected_with_the_item() {
        for junk in ["", "2xx", "299-200", "600", "99", "200,,201", "200-"] {
            let err = StatusSet::parse(junk).unwrap_err();
            assert!(err.contains("is not a status code"), "{junk:?}: {err}");
        }
    }
}
