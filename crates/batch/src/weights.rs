//! `llama-scorer score --base P`: the importance-weight view of a finished output file — per policy, the
//! items scored and failed, the mean weight, the effective sample size and the largest weights with their ids,
//! plus a warning when a policy configured identically to the base has any non-zero log-ratio (the 1e13
//! clone weights that made users distrust hosted APIs). Read back from the whole output file, so a resumed
//! run summarises every line, not only the last session's.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::record::{BatchRecord, ReadLine, id_text, read_records};
use crate::ratios::summarize;

/// How many of the largest weights are listed per policy.
const LARGEST: usize = 5;

/// The summary of one policy against the base.
#[derive(Debug, Serialize)]
pub struct PolicyWeights {
    pub policy: String,
    /// Output lines of this policy (scored or failed).
    pub items: usize,
    pub failures: usize,
    /// Items with a log-ratio (this policy and the base both scored them, with a sampling_logprob).
    pub with_ratio: usize,
    pub mean_weight: Option<f64>,
    pub log_mean_weight: Option<f64>,
    /// Effective sample size over n: (Σw)² / (n Σw²).
    pub ess_fraction: Option<f64>,
    pub max_abs_log_ratio: Option<f64>,
    /// The largest log-ratios, with their ids.
    pub largest: Vec<Largest>,
    /// Set when this policy is configured like the base yet some log-ratio is not exactly 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// One of the largest weights.
#[derive(Debug, Serialize)]
pub struct Largest {
    pub id: Value,
    pub log_ratio: f64,
}

/// The whole summary file.
#[derive(Debug, Serialize)]
pub struct WeightsReport {
    pub base: String,
    pub policies: Vec<PolicyWeights>,
}

/// One policy's lines, counted while reading the output.
#[derive(Default)]
struct Tally {
    items: usize,
    failures: usize,
    /// (id, log-ratio) of the items both it and the base scored.
    ratios: Vec<(String, f64)>,
}

/// Summarises `output` against `base`; `same_as_base` names the policies configured identically to it.
pub fn weights_report(
    output: &Path,
    base: &str,
    same_as_base: &[String],
) -> anyhow::Result<WeightsReport> {
    let mut records = Vec::new();
    read_records(output, |_, _, line| {
        if let ReadLine::Record(r) = line {
            records.push(r);
        }
        true
    })?;
    let base_values: HashMap<String, f64> = records
        .iter()
        .filter_map(|r| match r {
            BatchRecord::Scored(s) if s.policy == base => {
                Some((id_text(&s.id), s.sampling_logprob?))
            }
            _ => None,
        })
        .collect();
    let mut order: Vec<String> = Vec::new();
    let mut per: HashMap<String, Tally> = HashMap::new();
    for r in &records {
        let Some(policy) = r.policy().filter(|p| *p != base) else {
            continue;
        };
        if !per.contains_key(policy) {
            order.push(policy.to_string());
        }
        let entry = per.entry(policy.to_string()).or_default();
        entry.items += 1;
        let BatchRecord::Scored(s) = r else {
            entry.failures += 1;
            continue;
        };
        let key = id_text(&s.id);
        if let Some(r) = s
            .sampling_logprob
            .zip(base_values.get(&key))
            .map(|(p, b)| p - b)
        {
            entry.ratios.push((key, r));
        }
    }
    let policies = order
        .into_iter()
        .map(|policy| {
            let Tally {
                items,
                failures,
                ratios,
            } = per.remove(&policy).unwrap_or_default();
            let s = summarize(&ratios, LARGEST);
            let nonzero = ratios.iter().filter(|(_, r)| *r != 0.0).count();
            let warning = (same_as_base.contains(&policy) && nonzero > 0).then(|| {
                format!(
                    "`{policy}` is configured like the base `{base}` (same model, template, system prompt, \
                     temperature) yet {nonzero} of {} log-ratios are not 0: its numbers are not \
                     reproducible",
                    ratios.len()
                )
            });
            PolicyWeights {
                items,
                failures,
                with_ratio: ratios.len(),
                mean_weight: s.as_ref().map(|s| s.mean_weight).filter(|m| m.is_finite()),
                log_mean_weight: s.as_ref().map(|s| s.log_mean_weight),
                ess_fraction: s.as_ref().map(|s| s.ess_fraction),
                max_abs_log_ratio: s.as_ref().map(|s| s.max_abs_log_ratio),
                largest: s
                    .map(|s| s.largest)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(id, log_ratio)| Largest {
                        id: serde_json::from_str(&id).unwrap_or(Value::String(id)),
                        log_ratio,
                    })
                    .collect(),
                warning,
                policy,
            }
        })
        .collect();
    Ok(WeightsReport {
        base: base.to_string(),
        policies,
    })
}

impl WeightsReport {
    /// A small table for the terminal.
    pub fn table(&self) -> String {
        let mut out = format!(
            "importance weights against `{}`:\n{:<20} {:>7} {:>8} {:>12} {:>8} {:>14}  largest (id: log w)\n",
            self.base, "policy", "items", "failed", "mean w", "ESS/n", "max |log w|"
        );
        let num = |x: Option<f64>, p: usize| x.map_or("-".to_string(), |v| format!("{v:.p$e}"));
        for p in &self.policies {
            let largest: Vec<String> = p
                .largest
                .iter()
                .take(3)
                .map(|l| format!("{}: {:.3}", l.id, l.log_ratio))
                .collect();
            out.push_str(&format!(
                "{:<20} {:>7} {:>8} {:>12} {:>8} {:>14}  {}\n",
                p.policy,
                p.items,
                p.failures,
                p.mean_weight.map_or_else(
                    || num(p.log_mean_weight.map(f64::exp), 3),
                    |m| format!("{m:.4}")
                ),
                p.ess_fraction.map_or("-".into(), |e| format!("{e:.4}")),
                num(p.max_abs_log_ratio, 2),
                largest.join(", ")
            ));
            if let Some(w) = &p.warning {
                out.push_str(&format!("  warning: {w}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_with_any_nonzero_ratio_is_flagged_and_numbers_follow_the_definitions() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.jsonl");
        let scored = |id: Value, policy: &str, sampling_logprob: f64| {
            serde_json::json!({"id": id, "policy": policy, "logprob": sampling_logprob,
                "sampling_logprob": sampling_logprob, "temperature": 1.0, "prompt_tokens": 1,
                "response_tokens": 1, "cached": false, "system_fingerprint": "fp"})
            .to_string()
        };
        let b = || Value::from("b");
        let lines = [
            scored(1.into(), "p0", -2.0),
            scored(1.into(), "clone", -2.0),
            scored(1.into(), "hot", -1.0),
            scored(b(), "p0", -3.0),
            scored(b(), "clone", -2.5),
            r#"{"id": "b", "policy": "hot", "error": {"message": "x"}}"#.to_string(),
        ];
        std::fs::write(&out, lines.join("\n") + "\n").unwrap();
        let r = weights_report(&out, "p0", &["clone".to_string()]).unwrap();
        let [clone, hot] = &r.policies[..] else {
            panic!("{r:?}")
        };
        assert_eq!((clone.items, clone.failures, clone.with_ratio), (2, 0, 2));
        // w = 1 and e^0.5: mean and ESS/n by their definitions.
        let w = [1.0f64, 0.5f64.exp()];
        let mean = (w[0] + w[1]) / 2.0;
        let ess = (w[0] + w[1]).powi(2) / (2.0 * (w[0] * w[0] + w[1] * w[1]));
        assert!((clone.mean_weight.unwrap() - mean).abs() < 1e-12);
        assert!((clone.ess_fraction.unwrap() - ess).abs() < 1e-12);
        assert_eq!(clone.largest[0].id, Value::String("b".into()));
        assert!(
            clone.warning.as_deref().unwrap().contains("1 of 2"),
            "{clone:?}"
        );
        assert_eq!((hot.items, hot.failures, hot.with_ratio), (2, 1, 1));
        assert_eq!(hot.largest[0].id, serde_json::json!(1));
        assert!(hot.warning.is_none());
        assert!(r.table().contains("warning: `clone`"));
    }
}
