//! Importance weights from scores: the log-ratio log π_target(y|x) − log π_base(y|x) of one item, per token
//! where the two policies scored the same tokens, and the diagnostics users compute over many items (mean
//! weight, effective sample size, the largest weights). Pure arithmetic on [`ItemReport`]s, shared by
//! `/v1/logprobs` (`base`) and `llama-scorer score --base`.

use crate::report::{ItemReport, TokenReport};

/// One item's log-ratio against the base policy.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRatio {
    /// Σ sampling_logprob(policy) − Σ sampling_logprob(base); `None` when either side has no
    /// temperature-adjusted value (a remote completions API).
    pub total: Option<f64>,
    /// Per scored token, the difference of the two sampling log-probs — only when both policies scored the
    /// same token sequence (same ids and bytes). `None`: different tokenizations (different models or
    /// templates), where only the sums are comparable.
    pub per_token: Option<Vec<Option<f64>>>,
}

/// The scored tokens of a report (the echoed prompt's tokens, if any, come first and are skipped).
fn scored(r: &ItemReport) -> &[TokenReport] {
    &r.tokens[r.tokens.len() - r.scored_tokens..]
}

/// Whether two tokens are the same token: ids where both are known, and the same text and bytes.
fn same_token(a: &TokenReport, b: &TokenReport) -> bool {
    let ids = match (a.token_id, b.token_id) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    ids && a.token == b.token && a.bytes == b.bytes
}

/// The log-ratio of `policy`'s report against `base`'s for the same item.
pub fn log_ratio(policy: &ItemReport, base: &ItemReport) -> LogRatio {
    let total = policy
        .sampling_logprob
        .zip(base.sampling_logprob)
        .map(|(p, b)| p - b);
    let (ours, theirs) = (scored(policy), scored(base));
    let aligned =
        ours.len() == theirs.len() && ours.iter().zip(theirs).all(|(a, b)| same_token(a, b));
    let per_token = aligned.then(|| {
        ours.iter()
            .zip(theirs)
            .map(|(a, b)| {
                a.sampling_logprob
                    .zip(b.sampling_logprob)
                    .map(|(p, q)| p - q)
            })
            .collect()
    });
    LogRatio { total, per_token }
}

/// Diagnostics of one policy's weights w_i = exp(log_ratio_i) over the items scored under it and the base.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightSummary {
    /// Items with a log-ratio.
    pub n: usize,
    /// Mean of w (≈ 1 for a policy close to the base on the base's own samples); infinite when a weight
    /// overflows f64 — then [`WeightSummary::log_mean_weight`] still holds it.
    pub mean_weight: f64,
    /// log of the mean weight, finite whatever the weights.
    pub log_mean_weight: f64,
    /// Effective sample size over n: (Σw)² / (n Σw²), in (0, 1].
    pub ess_fraction: f64,
    /// The largest log-ratios, largest first, with their item ids (at most `top`).
    pub largest: Vec<(String, f64)>,
    /// The largest |log_ratio| (0 when every weight is exactly 1).
    pub max_abs_log_ratio: f64,
}

/// Summarises (id, log_ratio) pairs. Computed in log space with the maximum factored out, so weights of
/// e^±700 neither overflow nor vanish: mean = e^m Σ e^(r−m) / n, ESS/n = (Σ e^(r−m))² / (n Σ e^(2(r−m))).
pub fn summarize(ratios: &[(String, f64)], top: usize) -> Option<WeightSummary> {
    if ratios.is_empty() {
        return None;
    }
    let n = ratios.len();
    let m = ratios
        .iter()
        .map(|(_, r)| *r)
        .fold(f64::NEG_INFINITY, f64::max);
    let (s1, s2) = ratios.iter().fold((0.0f64, 0.0f64), |(a, b), (_, r)| {
        let w = (r - m).exp();
        (a + w, b + w * w)
    });
    let mut largest: Vec<(String, f64)> = ratios.to_vec();
    largest.sort_by(|a, b| b.1.total_cmp(&a.1));
    largest.truncate(top);
    Some(WeightSummary {
        n,
        mean_weight: m.exp() * s1 / n as f64,
        log_mean_weight: m + (s1 / n as f64).ln(),
        ess_fraction: s1 * s1 / (n as f64 * s2),
        largest,
        max_abs_log_ratio: ratios.iter().map(|(_, r)| r.abs()).fold(0.0, f64::max),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(tokens: &[(i64, &str, f64)]) -> ItemReport {
        ItemReport {
            logprob: tokens.iter().map(|t| t.2).sum(),
            sampling_logprob: Some(tokens.iter().map(|t| t.2).sum()),
            prompt_logprob: None,
            prompt_tokens: 1,
            response_tokens: tokens.len(),
            scored_tokens: tokens.len(),
            tokens: tokens
                .iter()
                .map(|&(id, text, lp)| TokenReport {
                    token: text.into(),
                    token_id: Some(id),
                    bytes: Some(text.as_bytes().to_vec()),
                    text_offset: 0,
                    logprob: Some(lp),
                    sampling_logprob: Some(lp),
                    top_logprobs: vec![],
                })
                .collect(),
            cached: false,
            system_fingerprint: None,
        }
    }

    #[test]
    fn aligned_tokens_get_per_token_differences_and_others_only_sums() {
        let base = report(&[(5, " Par", -1.0), (6, "is", -0.5)]);
        let target = report(&[(5, " Par", -2.0), (6, "is", -0.25)]);
        let r = log_ratio(&target, &base);
        assert_eq!(r.total, Some(-2.25 - -1.5));
        assert_eq!(r.per_token, Some(vec![Some(-1.0), Some(0.25)]));
        let other = report(&[(9, " Paris", -3.0)]);
        let r = log_ratio(&other, &base);
        assert_eq!(r.total, Some(-3.0 - -1.5));
        assert_eq!(r.per_token, None);
        let mut no_t = target.clone();
        no_t.sampling_logprob = None;
        assert_eq!(log_ratio(&no_t, &base).total, None);
    }

    #[test]
    fn summaries_match_the_definitions_and_survive_huge_weights() {
        let ids = |rs: &[f64]| -> Vec<(String, f64)> {
            rs.iter()
                .enumerate()
                .map(|(i, r)| (format!("i{i}"), *r))
                .collect()
        };
        // Identical policies: every weight 1, ESS/n = 1.
        let s = summarize(&ids(&[0.0, 0.0, 0.0]), 2).unwrap();
        assert_eq!((s.n, s.mean_weight, s.ess_fraction), (3, 1.0, 1.0));
        // w = 1, e, e²: mean (1 + e + e²)/3, ESS/n = (Σw)²/(3 Σw²), computed directly here.
        let e = std::f64::consts::E;
        let s = summarize(&ids(&[0.0, 1.0, 2.0]), 1).unwrap();
        let (w1, w2) = (1.0 + e + e * e, 1.0 + e * e + e.powi(4));
        assert!((s.mean_weight - w1 / 3.0).abs() < 1e-12);
        assert!((s.ess_fraction - w1 * w1 / (3.0 * w2)).abs() < 1e-12);
        assert_eq!(s.largest, vec![("i2".to_string(), 2.0)]);
        // One weight of e^800 (overflows f64 directly): ESS/n → 1/n, no NaN.
        let s = summarize(&ids(&[0.0, 800.0]), 1).unwrap();
        assert!((s.ess_fraction - 0.5).abs() < 1e-12, "{s:?}");
        assert!(s.mean_weight.is_infinite() || s.mean_weight > 1e300);
        assert_eq!(s.max_abs_log_ratio, 800.0);
        assert!(
            (s.log_mean_weight - (800.0 + (0.5f64 * (1.0 + (-800.0f64).exp())).ln())).abs() < 1e-9
        );
        assert!(summarize(&[], 3).is_none());
    }
}
