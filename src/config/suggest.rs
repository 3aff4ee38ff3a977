//! "Did you mean …?" for unknown keys, choices and ids.

/// The candidate closest to `input`, if it is close enough to be a likely typo.
///
/// Case and `-`/`_` differences count as nothing (`Max-Restarts` → `max_restarts`); otherwise
/// up to one edit per three characters, rounded up (at least one, at most three) is accepted, with a swap
/// of two neighbours counting as one edit (`restrat` → `restart`).
pub(crate) fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wanted = normalize(input);
    let limit = wanted.chars().count().div_ceil(3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&wanted, &normalize(c)), c))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

fn normalize(s: &str) -> String {
    s.chars().map(|c| if c == '-' { '_' } else { c.to_ascii_lowercase() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [&str; 5] = ["policy", "max_restarts", "delay_s", "max_delay_s", "reset_after_s"];

    #[test]
    fn suggests_typos_swaps_and_case() {
        assert_eq!(closest("restrat", ["restart", "health"]), Some("restart"));
        assert_eq!(closest("polcy", KEYS), Some("policy"));
        assert_eq!(closest("Max-Restarts", KEYS), Some("max_restarts"));
        assert_eq!(closest("delay", KEYS), Some("delay_s"));
        assert_eq!(closest("on_failure", ["no", "on-failure", "always"]), Some("on-failure"));
    }

    #[test]
    fn stays_quiet_when_nothing_is_close() {
        assert_eq!(closest("gpu_memory", KEYS), None);
        assert_eq!(closest("x", ["ui", "gpu"]), None);
    }
}
