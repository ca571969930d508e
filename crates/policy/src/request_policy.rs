//! Request policy: the numeric rules a request is held to, in one place whatever front end reads it (the
//! native API, the OpenAI/Fireworks compatibility API, the config's policies, the `score` command).
//!
//! Knows no HTTP and no wire shapes: each rule returns a message the caller attaches to its field name.
//! The context-size default lives with the engine ([`crate::engine::settings::default_n_ctx`]), which sizes
//! its contexts by it.

/// Temperatures a policy or a native `/v1/logprobs` request may use: below 1e-3 the scaled logits leave the
/// range where `exp` in f32 is meaningful, and no sampler uses such values.
pub const TEMPERATURE_RANGE: (f64, f64) = (1e-3, 1e3);

/// Temperatures the compatibility endpoints accept for sampling (0 = greedy, as OpenAI; 100 as Fireworks'
/// upper bound).
pub const COMPAT_TEMPERATURE_RANGE: (f64, f64) = (0.0, 100.0);

/// Most alternatives per position on `/v1/logprobs`.
pub const MAX_TOP_LOGPROBS: u32 = 20;

/// Most alternatives per position in the legacy completions `logprobs: k`, also the limit of `top_logprobs`
/// with `logprobs: true` on completions: 20, what hosted APIs accept (Together; OpenAI's own limit was 5)
/// and above what evaluation harnesses send (lm-eval's `gguf` backend: 10).
pub const MAX_LEGACY_LOGPROBS: u32 = 20;

/// Most alternatives per position in chat's `top_logprobs` (OpenAI's limit of 20).
pub const MAX_CHAT_TOP_LOGPROBS: u32 = 20;

/// Checks that `v` is finite and within `lo..=hi`.
pub fn check_range(v: f64, (lo, hi): (f64, f64)) -> Result<f64, String> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be between {lo} and {hi}, got {v}"))
    }
}

/// Checks a scoring temperature (policy or native request) against [`TEMPERATURE_RANGE`].
pub fn check_temperature(t: f64) -> Result<(), String> {
    check_range(t, TEMPERATURE_RANGE)
        .map(|_| ())
        .map_err(|m| format!("must be a number {}", m.trim_start_matches("must be ")))
}

/// Checks a requested number of alternatives per position against `max`.
pub fn check_top_logprobs(k: u32, max: u32) -> Result<usize, String> {
    if k <= max {
        Ok(k as usize)
    } else {
        Err(format!("must be between 0 and {max}, got {k}"))
    }
}

/// Folds a 64-bit seed into llama.cpp's 32-bit one (distinct seeds below 2^32 stay distinct).
pub fn fold_seed(seed: u64) -> u32 {
    (seed ^ (seed >> 32)) as u32
}

/// The seed of choice `j` of a request whose (folded) seed is `seed`: `seed + j`, wrapping, so choices
/// differ from each other and choice 0 is what the same request with `n: 1` samples.
pub fn choice_seed(seed: u32, j: usize) -> u32 {
    seed.wrapping_add(j as u32)
}

/// `max_tokens` asked for more room than the context has after the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRoom {
    /// Tokens the context leaves after the prompt.
    pub room: usize,
}

/// Fits `max_tokens` into what `n_ctx` leaves after a `prompt_len`-token prompt: shrunk to the room, or
/// [`NoRoom`] when `error_on_overflow` (the client chose the number and asked for an error).
pub fn fit_max_tokens(
    max_tokens: usize,
    prompt_len: usize,
    n_ctx: usize,
    error_on_overflow: bool,
) -> Result<usize, NoRoom> {
    let room = n_ctx.saturating_sub(prompt_len);
    match (max_tokens > room, error_on_overflow) {
        (false, _) => Ok(max_tokens),
        (true, false) => Ok(room),
        (true, true) => Err(NoRoom { room }),
    }
}

/// `scheme://host[:port]` lowercased, with the scheme's default port dropped; `None` for anything else
/// (`null`, paths, other schemes, user info). The rule of the Origin check and of the origins the config
/// allows.
pub fn normalize_origin(origin: &str) -> Option<String> {
    let origin = origin.trim().to_ascii_lowercase();
    let (scheme, rest) = origin.split_once("://")?;
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let authority = rest.strip_suffix(default_port).unwrap_or(rest);
    Some(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_and_compat_temperatures_differ() {
        assert!(check_temperature(1e-3).is_ok());
        assert!(check_temperature(1e3).is_ok());
        assert!(check_temperature(0.0).is_err());
        assert!(check_temperature(f64::NAN).is_err());
        assert!(
            check_temperature(1001.0)
                .unwrap_err()
                .contains("0.001 and 1000")
        );
        assert_eq!(check_range(0.0, COMPAT_TEMPERATURE_RANGE), Ok(0.0));
        assert!(check_range(100.5, COMPAT_TEMPERATURE_RANGE).is_err());
        assert!(check_range(f64::INFINITY, COMPAT_TEMPERATURE_RANGE).is_err());
    }

    #[test]
    fn top_logprobs_limits() {
        assert_eq!(check_top_logprobs(20, MAX_TOP_LOGPROBS), Ok(20));
        assert!(check_top_logprobs(21, MAX_TOP_LOGPROBS).is_err());
        assert!(check_top_logprobs(21, MAX_LEGACY_LOGPROBS).is_err());
        assert_eq!(check_top_logprobs(20, MAX_CHAT_TOP_LOGPROBS), Ok(20));
    }

    #[test]
    fn seeds_fold_and_choices_count_up() {
        assert_eq!(fold_seed(7), 7);
        assert_ne!(fold_seed(1 << 32), fold_seed(0));
        assert_eq!(choice_seed(fold_seed(41), 1), 42);
        assert_eq!(choice_seed(u32::MAX, 1), 0);
    }

    #[test]
    fn max_tokens_fits_the_context() {
        assert_eq!(fit_max_tokens(10, 90, 100, false), Ok(10));
        assert_eq!(fit_max_tokens(20, 90, 100, false), Ok(10));
        assert_eq!(fit_max_tokens(20, 90, 100, true), Err(NoRoom { room: 10 }));
        assert_eq!(fit_max_tokens(5, 100, 100, false), Ok(0));
    }

    mod fuzz {
        //! Property tests: the numeric rules over all inputs, NaN and infinities included,
        //! against their documented meaning.

        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn ranges_take_finite_numbers_inside_only(
                v in prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), Just(-0.0), -2.0..2.0f64],
                lo in -1e6..1e6f64,
                width in prop_oneof![Just(0.0), 0.0..1e6f64],
            ) {
                let hi = lo + width;
                match check_range(v, (lo, hi)) {
                    Ok(got) => prop_assert!(got.to_bits() == v.to_bits() && lo <= v && v <= hi),
                    Err(m) => {
                        prop_assert!(!(v.is_finite() && lo <= v && v <= hi), "{} refused: {}", v, m);
                        prop_assert!(m.contains(&format!("between {lo} and {hi}")), "{}", m);
                    }
                }
                let t = check_temperature(v);
                prop_assert_eq!(t.is_ok(), v.is_finite() && (1e-3..=1e3).contains(&v), "{:?}", t);
                prop_assert!(t.err().is_none_or(|m| m.starts_with("must be a number")));
            }

            #[test]
            fn top_logprobs_within_the_limit_pass_unchanged(k in any::<u32>(), max in prop_oneof![Just(5u32), Just(20), any::<u32>()]) {
                match check_top_logprobs(k, max) {
                    Ok(got) => prop_assert!(k <= max && got == k as usize),
                    Err(m) => prop_assert!(k > max && m.contains(&k.to_string()), "{}", m),
                }
            }

            #[test]
            fn seeds_below_2_32_stay_themselves_and_choices_differ(seed in any::<u64>(), low in any::<u32>()) {
                prop_assert_eq!(fold_seed(u64::from(low)), low);
                let folded = fold_seed(seed);
                let choices: std::collections::HashSet<u32> = (0..16).map(|j| choice_seed(folded, j)).collect();
                prop_assert_eq!(choices.len(), 16);
                prop_assert_eq!(choice_seed(folded, 0), folded);
            }

            #[test]
            fn max_tokens_is_kept_shrunk_to_the_room_or_refused(
                max_tokens in prop_oneof![0usize..300, any::<usize>()],
                prompt_len in prop_oneof![0usize..300, any::<usize>()],
                n_ctx in prop_oneof![0usize..300, any::<usize>()],
                error_on_overflow in any::<bool>(),
            ) {
                // The room is what the context leaves after the prompt (none when the prompt fills it).
                let room = n_ctx.saturating_sub(prompt_len);
                let fits = max_tokens == 0 || prompt_len as u128 + max_tokens as u128 <= n_ctx as u128;
                let expected = match (fits, error_on_overflow) {
                    (true, _) => Ok(max_tokens),
                    (false, false) => Ok(room),
                    (false, true) => Err(NoRoom { room }),
                };
                prop_assert_eq!(fit_max_tokens(max_tokens, prompt_len, n_ctx, error_on_overflow), expected);
            }
        }
    }

    #[test]
    fn normalize_keeps_only_scheme_host_port() {
        assert_eq!(
            normalize_origin("http://A.b:80").as_deref(),
            Some("http://a.b")
        );
        assert_eq!(
            normalize_origin("https://a.b:8443").as_deref(),
            Some("https://a.b:8443")
        );
        assert_eq!(normalize_origin("ftp://a.b"), None);
        assert_eq!(normalize_origin("null"), None);
        assert_eq!(normalize_origin("http://a.b/"), None);
        assert_eq!(normalize_origin("http://u@a.b"), None);
    }
}
