//! The budget of one request: how much work and answer a single body may cause, whatever its size. Each
//! rule is a pure check in linear time returning a message the caller attaches to the field it names
//! (the same pattern as [`crate::request_policy`]); the limits that are settings (`max_batch_items`) come in
//! as arguments.

use std::collections::HashSet;

/// Most stop strings per request (OpenAI allows 4; Fireworks more).
pub const MAX_STOP: usize = 16;

/// Most bytes of one stop string: every generated token is matched against each, so both are bounded.
pub const MAX_STOP_BYTES: usize = 1 << 10;

/// Most `logit_bias` entries (OpenAI's limit is 300; a sampler copy of each is made per generation).
pub const MAX_LOGIT_BIAS: usize = 1024;

/// Most entries an answer may hold: the tokens it reports times (1 + the alternatives shown per token).
/// About 100 bytes of JSON each, so the largest allowed answer is on the order of 100 MiB.
pub const MAX_ANSWER_ENTRIES: usize = 1 << 20;

/// Checks that `prompts` prompts with `n` choices each (one job per choice) stay within `max_items`
/// (the server's `max_batch_items`).
pub fn check_fan_out(prompts: usize, n: usize, max_items: usize) -> Result<(), String> {
    let choices = prompts.saturating_mul(n);
    if choices > max_items {
        return Err(format!(
            "{prompts} prompt(s) × n = {n} is {choices} choices, more than this server's limit of \
             {max_items} per request (server.max_batch_items); send fewer prompts or a smaller n"
        ));
    }
    Ok(())
}

/// Checks the stop strings: at most [`MAX_STOP`] of at most [`MAX_STOP_BYTES`] each, none empty (an empty
/// one would stop every generation at once).
pub fn check_stop(stop: &[String]) -> Result<(), String> {
    if stop.len() > MAX_STOP {
        return Err(format!(
            "at most {MAX_STOP} stop strings, got {}",
            stop.len()
        ));
    }
    if stop.iter().any(String::is_empty) {
        return Err("stop strings must not be empty".into());
    }
    if let Some(long) = stop.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        return Err(format!(
            "each stop string may be at most {MAX_STOP_BYTES} bytes, got one of {}",
            long.len()
        ));
    }
    Ok(())
}

/// Checks the number of `logit_bias` entries against [`MAX_LOGIT_BIAS`].
pub fn check_logit_bias_len(entries: usize) -> Result<(), String> {
    if entries > MAX_LOGIT_BIAS {
        return Err(format!("at most {MAX_LOGIT_BIAS} entries, got {entries}"));
    }
    Ok(())
}

/// Checks a list of policy names (`models`): no longer than the number of policies served (a longer one
/// must repeat or name unknown policies), and without duplicates, found with a hash set in linear time.
/// On a duplicate, returns its index and the message.
pub fn check_policy_list(names: &[String], served: usize) -> Result<(), (Option<usize>, String)> {
    if names.len() > served {
        return Err((
            None,
            format!(
                "lists {} policies but this server serves {served}",
                names.len()
            ),
        ));
    }
    let mut seen = HashSet::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        if !seen.insert(name.as_str()) {
            return Err((Some(i), format!("`{name}` is listed twice")));
        }
    }
    Ok(())
}

/// The entries an answer reports: `tokens` tokens, each with `top` alternatives.
pub fn answer_entries(tokens: usize, top: usize) -> usize {
    tokens.saturating_mul(top.saturating_add(1))
}

/// Checks an answer's size in entries (see [`answer_entries`]) against [`MAX_ANSWER_ENTRIES`].
pub fn check_answer_entries(entries: usize) -> Result<(), String> {
    if entries > MAX_ANSWER_ENTRIES {
        return Err(format!(
            "the answer would report {entries} token entries (tokens × (1 + alternatives), over all \
             choices), more than this server's limit of {MAX_ANSWER_ENTRIES}; ask for fewer tokens, \
             alternatives or prompts"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_is_prompts_times_n() {
        assert!(check_fan_out(16, 16, 256).is_ok());
        assert!(
            check_fan_out(17, 16, 256)
                .unwrap_err()
                .contains("272 choices")
        );
        assert!(check_fan_out(usize::MAX, 2, 256).is_err());
    }

    #[test]
    fn stop_strings_are_bounded_in_count_and_length() {
        let s = |n: usize, len: usize| vec!["x".repeat(len); n];
        assert!(check_stop(&s(MAX_STOP, MAX_STOP_BYTES)).is_ok());
        assert!(check_stop(&s(MAX_STOP + 1, 1)).is_err());
        assert!(check_stop(&s(1, MAX_STOP_BYTES + 1)).is_err());
        assert!(check_stop(&s(1, 0)).is_err());
    }

    #[test]
    fn policy_lists_refuse_duplicates_and_excess() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_policy_list(&names(&["a", "b"]), 2).is_ok());
        assert_eq!(
            check_policy_list(&names(&["a", "b", "a"]), 3)
                .unwrap_err()
                .0,
            Some(2)
        );
        assert_eq!(
            check_policy_list(&names(&["a", "b", "c"]), 2)
                .unwrap_err()
                .0,
            None
        );
    }

    #[test]
    fn policy_list_check_is_linear() {
        // 150k distinct names: pairwise comparison would take ~10^10 steps; a hash set takes milliseconds.
        let many: Vec<String> = (0..150_000).map(|i| format!("p{i}")).collect();
        assert!(check_policy_list(&many, many.len()).is_ok());
    }

    #[test]
    fn answer_entries_count_alternatives() {
        assert_eq!(answer_entries(10, 0), 10);
        assert_eq!(answer_entries(10, 5), 60);
        assert!(check_answer_entries(MAX_ANSWER_ENTRIES).is_ok());
        assert!(check_answer_entries(MAX_ANSWER_ENTRIES + 1).is_err());
    }
}
