//! One line of a `score` output file, typed: written by `score`, read back by its resume, by `merge` and by the
//! weights report, so that the three agree on what a line holds and how it is known ([`RecordKey`]).
//!
//! The line's JSON is the file format users keep and post-process: field names and order are part of it.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A line of a `score` output: one (id, policy) pair scored or failed, or an input line that could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BatchRecord {
    Scored(Scored),
    Failed(Failed),
    Unreadable(Unreadable),
}

/// The scores of one item under one policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scored {
    /// The input line's `id`, else its line number.
    pub id: Value,
    pub policy: String,
    /// log π(response | prompt) at temperature 1.
    pub logprob: f64,
    /// The same at the policy's temperature, where known.
    pub sampling_logprob: Option<f64>,
    pub temperature: f64,
    pub prompt_tokens: usize,
    pub response_tokens: usize,
    /// Found in a cache rather than computed for this run (says how, not what: merge ignores it).
    pub cached: bool,
    pub system_fingerprint: Option<String>,
    /// With `--token-logprobs`: the scored tokens' ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<Option<i64>>>,
    /// With `--token-logprobs`: their log-probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_logprobs: Option<Vec<Option<f64>>>,
    /// With `--base`, on every policy but the base: sampling_logprob − the base's (`null` where either side
    /// has no value); absent otherwise.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "present_or_null",
        deserialize_with = "null_is_present"
    )]
    pub log_ratio: Option<Option<f64>>,
}

/// One (id, policy) pair that could not be scored, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failed {
    pub id: Value,
    pub policy: String,
    pub error: ErrorText,
}

/// An input line that is not an item (bad JSON, unknown fields, unknown policy): known by its line number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unreadable {
    pub line: u64,
    pub error: ErrorText,
}

/// The `{"message": …}` of a failure, as the API's errors carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorText {
    pub message: String,
}

impl ErrorText {
    /// The error object of a failure.
    pub fn new(message: impl Into<String>) -> ErrorText {
        ErrorText {
            message: message.into(),
        }
    }
}

/// How a record is known: the pair it scores, or the input line it could not read. Two records with one key
/// answer the same question (a rerun, a requeued shard), so resume skips it and merge keeps one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKey {
    /// `id` is the id's compact JSON, so that `1` and `"1"` stay apart.
    Pair {
        id: String,
        policy: String,
    },
    Line(u64),
}

impl RecordKey {
    /// The key of (id, policy).
    pub fn pair(id: &Value, policy: &str) -> RecordKey {
        RecordKey::Pair {
            id: id_text(id),
            policy: policy.to_string(),
        }
    }
}

/// An id as records are compared by it: its compact JSON.
pub fn id_text(id: &Value) -> String {
    id.to_string()
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordKey::Pair { id, policy } => write!(f, "(id {id}, policy {policy})"),
            RecordKey::Line(n) => write!(f, "the error record of input line {n}"),
        }
    }
}

impl BatchRecord {
    /// What the record answers.
    pub fn key(&self) -> RecordKey {
        match self {
            BatchRecord::Scored(s) => RecordKey::pair(&s.id, &s.policy),
            BatchRecord::Failed(f) => RecordKey::pair(&f.id, &f.policy),
            BatchRecord::Unreadable(u) => RecordKey::Line(u.line),
        }
    }

    /// The policy of a pair's record.
    pub fn policy(&self) -> Option<&str> {
        match self {
            BatchRecord::Scored(s) => Some(&s.policy),
            BatchRecord::Failed(f) => Some(&f.policy),
            BatchRecord::Unreadable(_) => None,
        }
    }

    /// Whether this is a failure (of a pair or of a line).
    pub fn is_error(&self) -> bool {
        !matches!(self, BatchRecord::Scored(_))
    }

    /// The record without what says how it was computed rather than what it is (`cached`), as JSON text:
    /// two records are the same answer when these are equal.
    pub fn content(&self) -> String {
        let mut same = self.clone();
        if let BatchRecord::Scored(s) = &mut same {
            s.cached = false;
        }
        same.to_line()
    }

    /// The record's output line, without the newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a record is always JSON")
    }

    /// Reads one complete output line (without its newline): a record, or what it is instead.
    pub fn from_line(line: &str) -> ReadLine {
        if line.trim().is_empty() {
            return ReadLine::Blank;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(value) if value.is_object() => serde_json::from_value(value).map_or_else(
                |_| {
                    ReadLine::Unknown(
                        "neither a scored or failed (id, policy) record nor a line's error record"
                            .into(),
                    )
                },
                ReadLine::Record,
            ),
            _ => ReadLine::Garbled,
        }
    }
}

/// One line of an output file as read back.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one line at a time: its size does not matter
pub enum ReadLine {
    Record(BatchRecord),
    /// A complete JSON object that is not a record; the reason.
    Unknown(String),
    /// A complete line that is not a JSON object (a torn write followed by others, a foreign file).
    Garbled,
    /// A last line without its newline: a write cut off by an interruption.
    Torn,
    /// A line of white space only.
    Blank,
}

/// Reads an output file line by line, calling `each` with the line's number (from 1, blank lines counted), its
/// length in bytes and what it holds; stops early when `each` returns false.
pub fn read_records(
    path: &Path,
    mut each: impl FnMut(usize, usize, ReadLine) -> bool,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(std::fs::File::open(path)?);
    let mut buf = String::new();
    let mut number = 0;
    loop {
        buf.clear();
        let n = reader.read_line(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        number += 1;
        let line = if buf.ends_with('\n') {
            BatchRecord::from_line(buf.trim_end())
        } else {
            ReadLine::Torn
        };
        if !each(number, n, line) {
            return Ok(());
        }
    }
}

/// Writes `Some(x)` as `x` (a number or `null`); `None` is skipped by `skip_serializing_if`.
fn present_or_null<S: Serializer>(v: &Option<Option<f64>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(inner) => inner.serialize(s),
        None => s.serialize_none(),
    }
}

/// A present field, `null` included, is `Some`; an absent one is `None` (the `default`).
fn null_is_present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(v: Value) -> Option<BatchRecord> {
        match BatchRecord::from_line(&v.to_string()) {
            ReadLine::Record(r) => Some(r),
            _ => None,
        }
    }

    #[test]
    fn each_kind_of_line_reads_as_itself_and_is_known_by_its_key() {
        let scored = read(
            json!({"id": "a", "policy": "p", "logprob": -1.5, "sampling_logprob": null,
            "temperature": 1.0, "prompt_tokens": 3, "response_tokens": 2, "cached": false,
            "system_fingerprint": "fp"}),
        )
        .unwrap();
        assert!(matches!(scored, BatchRecord::Scored(_)));
        assert_eq!(scored.key(), RecordKey::pair(&json!("a"), "p"));
        let failed = read(json!({"id": 7, "policy": "p", "error": {"message": "x"}})).unwrap();
        assert!(matches!(failed, BatchRecord::Failed(_)) && failed.is_error());
        assert_eq!(failed.key().to_string(), "(id 7, policy p)");
        let line = read(json!({"line": 4, "error": {"message": "x"}})).unwrap();
        assert_eq!(line.key(), RecordKey::Line(4));
        assert_ne!(
            RecordKey::pair(&json!(1), "p"),
            RecordKey::pair(&json!("1"), "p")
        );
    }

    #[test]
    fn lines_score_does_not_write_are_refused() {
        for bad in [
            json!({"line": 4}),
            json!({"id": 1}),
            json!({"id": 1, "policy": "p", "error": {"message": "x"}, "extra": 1}),
            json!({"id": 1, "policy": "p", "logprob": "high"}),
            json!([1]),
        ] {
            assert!(read(bad.clone()).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_log_ratio_is_absent_null_or_a_number_and_stays_so() {
        let base = json!({"id": 1, "policy": "p", "logprob": -1.0, "sampling_logprob": -1.0,
            "temperature": 0.5, "prompt_tokens": 1, "response_tokens": 1, "cached": true,
            "system_fingerprint": null});
        let mut with_null = base.clone();
        with_null["log_ratio"] = Value::Null;
        let mut with_number = base.clone();
        with_number["log_ratio"] = json!(-0.25);
        for v in [base, with_null, with_number] {
            assert_eq!(read(v.clone()).unwrap().to_line(), v.to_string());
        }
    }

    #[test]
    fn content_ignores_only_cached() {
        let v = json!({"id": 1, "policy": "p", "logprob": -1.0, "sampling_logprob": -1.0,
            "temperature": 1.0, "prompt_tokens": 1, "response_tokens": 1, "cached": true,
            "system_fingerprint": "fp"});
        let a = read(v.clone()).unwrap();
        let mut w = v.clone();
        w["cached"] = json!(false);
        assert_eq!(a.content(), read(w).unwrap().content());
        let mut w = v;
        w["logprob"] = json!(-1.0000001);
        assert_ne!(a.content(), read(w).unwrap().content());
    }
}
