//! `llama-scorer merge`: joins the outputs of `score --shard K/N` runs into one file in the input's order,
//! and refuses to produce a result that is not the whole, consistent answer.
//!
//! The original input says which (id, policy) pairs must exist: each line's id (its `id`, else its line
//! number, as `score` names it) under the line's `policies`, else the run's default policies (`--policies`,
//! else every policy found in the shard files). A line `score` could not read has one `{"line": N, "error"}`
//! record instead. Merge fails, writing nothing, when a pair is missing, when two records of one pair differ
//! (other than in `cached`), when the records of one policy carry different `system_fingerprint`s (they were
//! computed under different models, builds or settings, so their numbers are not comparable), when a shard
//! file holds a record the input does not ask for, or when a shard file has a torn or unreadable line.
//! Identical duplicates (a shard rerun, overlapping files) are dropped; a success replaces an error record of
//! the same pair. Error records are kept and counted.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;

use super::record::{BatchRecord, ReadLine, RecordKey as Key, id_text, read_records};

/// What `merge` was asked to do.
pub struct MergeArgs {
    /// The JSONL file the shards scored (for the order and the expected pairs).
    pub input: PathBuf,
    /// Where the merged JSONL goes (written whole, only when the merge succeeds).
    pub output: PathBuf,
    /// The shard outputs.
    pub shards: Vec<PathBuf>,
    /// The run's policies for lines that name none; `None`: every policy found in the shard files.
    pub policies: Option<Vec<String>>,
}

/// What a successful merge wrote.
#[derive(Debug, Default)]
pub struct MergeSummary {
    /// Records written (pairs and line errors).
    pub written: usize,
    /// Of which error records.
    pub errors: usize,
    /// Duplicate records dropped (identical, or an error replaced by a success).
    pub duplicates: usize,
    /// Each policy's `system_fingerprint` (absent for a policy with only error records).
    pub fingerprints: BTreeMap<String, String>,
    /// The default policies, when they were taken from the shard files rather than `--policies`.
    pub inferred_policies: Option<Vec<String>>,
}

/// A record of a shard file and where it was read.
struct Record {
    value: BatchRecord,
    /// (index of the file, line number): the order `score` wrote records in.
    origin: (usize, usize),
    place: String,
}

/// Problems found, reported together (a few examples of each kind, and how many).
#[derive(Default)]
struct Problems {
    kinds: BTreeMap<&'static str, Vec<String>>,
}

impl Problems {
    fn add(&mut self, kind: &'static str, what: String) {
        self.kinds.entry(kind).or_default().push(what);
    }

    fn into_result(self) -> anyhow::Result<()> {
        if self.kinds.is_empty() {
            return Ok(());
        }
        let mut text = String::from("merge failed; nothing was written:");
        for (kind, items) in &self.kinds {
            text.push_str(&format!("\n  {} {kind}:", items.len()));
            for item in items.iter().take(10) {
                text.push_str(&format!("\n    {item}"));
            }
            if items.len() > 10 {
                text.push_str(&format!("\n    … and {} more", items.len() - 10));
            }
        }
        bail!(text)
    }
}

/// Reads every shard file into one map, keeping the first of identical duplicates.
fn read_shards(
    shards: &[PathBuf],
    problems: &mut Problems,
    summary: &mut MergeSummary,
) -> anyhow::Result<HashMap<Key, Record>> {
    let mut records: HashMap<Key, Record> = HashMap::new();
    for (file_index, path) in shards.iter().enumerate() {
        read_shard(file_index, path, &mut records, problems, summary)?;
    }
    Ok(records)
}

/// Adds one shard file's records; a file that cannot be read stops the merge, a bad line is a problem
/// reported with the others: a line without its newline is torn (the shard was interrupted), one that is not
/// a record is not a line `score` writes.
fn read_shard(
    file_index: usize,
    path: &Path,
    records: &mut HashMap<Key, Record>,
    problems: &mut Problems,
    summary: &mut MergeSummary,
) -> anyhow::Result<()> {
    read_records(path, |number, _, line| {
        let place = format!("{}:{number}", path.display());
        match line {
            ReadLine::Record(value) => {
                let record = Record {
                    value,
                    origin: (file_index, number),
                    place,
                };
                keep_record(records, record.value.key(), record, problems, summary);
            }
            ReadLine::Torn | ReadLine::Garbled => problems.add(
                "unreadable shard lines (a torn last line means an interrupted shard: rerun it to resume)",
                format!("{place}: not a complete JSON object line"),
            ),
            ReadLine::Unknown(why) => problems.add("unreadable shard lines", format!("{place}: {why}")),
            ReadLine::Blank => {}
        }
        true
    })
    .with_context(|| format!("cannot read {}", path.display()))
}

/// Keeps one record per key: an identical duplicate is dropped, a success replaces an error, and two
/// different successes are a conflict.
fn keep_record(
    records: &mut HashMap<Key, Record>,
    key: Key,
    record: Record,
    problems: &mut Problems,
    summary: &mut MergeSummary,
) {
    match records.get(&key) {
        None => {
            records.insert(key, record);
        }
        Some(kept) if kept.value.content() == record.value.content() => summary.duplicates += 1,
        Some(kept) if kept.value.is_error() != record.value.is_error() => {
            summary.duplicates += 1;
            if kept.value.is_error() {
                records.insert(key, record);
            }
        }
        Some(kept) if kept.value.is_error() => summary.duplicates += 1,
        Some(kept) => problems.add(
            "conflicting duplicates (one pair scored twice with different results)",
            format!("{key}: {} and {} differ", kept.place, record.place),
        ),
    }
}

/// Checks that every policy's records carry one `system_fingerprint`; returns them.
fn check_fingerprints(
    records: &HashMap<Key, Record>,
    problems: &mut Problems,
) -> BTreeMap<String, String> {
    // policy → fingerprint → an example place.
    let mut seen: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut in_order: Vec<(&Key, &Record)> = records.iter().collect();
    in_order.sort_by_key(|(_, r)| r.origin);
    for (key, record) in in_order {
        let (Key::Pair { policy, .. }, BatchRecord::Scored(scored)) = (key, &record.value) else {
            continue;
        };
        let fp = scored
            .system_fingerprint
            .as_deref()
            .unwrap_or("(none)")
            .to_string();
        seen.entry(policy.clone())
            .or_default()
            .entry(fp)
            .or_insert_with(|| record.place.clone());
    }
    let mut out = BTreeMap::new();
    for (policy, fps) in seen {
        if fps.len() > 1 {
            let list: Vec<String> = fps
                .iter()
                .map(|(fp, place)| format!("{fp} (e.g. {place})"))
                .collect();
            problems.add(
                "policies whose records carry different system_fingerprints (not comparable numbers)",
                format!("{policy}: {}", list.join(", ")),
            );
        }
        if let Some(fp) = fps.into_keys().next() {
            out.insert(policy, fp);
        }
    }
    out
}

/// The policies found in the records, in the order they first appear.
fn policies_in(records: &HashMap<Key, Record>) -> Vec<String> {
    let mut found: Vec<(&(usize, usize), &String)> = records
        .iter()
        .filter_map(|(k, r)| match k {
            Key::Pair { policy, .. } => Some((&r.origin, policy)),
            Key::Line(_) => None,
        })
        .collect();
    found.sort();
    let mut names: Vec<String> = Vec::new();
    for (_, p) in found {
        if !names.contains(p) {
            names.push(p.clone());
        }
    }
    names
}

/// What one input line expects: its line-error record, or its pairs (in output order when `ordered`).
struct Expected {
    keys: Vec<Key>,
    /// Whether `keys` is already in the order `score` writes them; else they follow the shard files.
    ordered: bool,
}

/// The records an input line expects, as `score` names them (see the module comment).
fn expected_of(
    number: usize,
    text: &str,
    defaults: &[String],
    defaults_ordered: bool,
    records: &HashMap<Key, Record>,
) -> Result<(String, Expected), String> {
    let line_key = Key::Line(number as u64);
    let single = |k: Key| Expected {
        keys: vec![k],
        ordered: true,
    };
    let Ok(Value::Object(line)) = serde_json::from_str::<Value>(text) else {
        return Ok((String::new(), single(line_key)));
    };
    if records.contains_key(&line_key) {
        return Ok((String::new(), single(line_key)));
    }
    let id = match line.get("id") {
        None | Some(Value::Null) => Value::from(number),
        Some(v) => v.clone(),
    };
    let id = id_text(&id);
    let (policies, ordered) = match line.get("policies") {
        None | Some(Value::Null) => (defaults.to_vec(), defaults_ordered),
        Some(Value::Array(names)) => (
            names
                .iter()
                .map(|n| n.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("input line {number}: `policies` is not a list of names"))?,
            true,
        ),
        Some(_) => return Err(format!("input line {number}: `policies` is not a list")),
    };
    let keys = policies
        .into_iter()
        .map(|policy| Key::Pair {
            id: id.clone(),
            policy,
        })
        .collect();
    Ok((id, Expected { keys, ordered }))
}

/// Runs the merge; on success the output holds every expected record in input order.
pub fn run(args: &MergeArgs) -> anyhow::Result<MergeSummary> {
    check_paths(args)?;
    let mut summary = MergeSummary::default();
    let mut problems = Problems::default();
    let mut records = read_shards(&args.shards, &mut problems, &mut summary)?;
    summary.fingerprints = check_fingerprints(&records, &mut problems);
    let defaults = default_policies(args, &records, &mut summary);
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let out = in_input_order(&text, &defaults, &mut records, &mut problems);
    report_unasked(&records, &mut problems);
    problems.into_result()?;

    summary.written = out.len();
    summary.errors = out.iter().filter(|r| r.is_error()).count();
    write_atomically(&args.output, &out)?;
    Ok(summary)
}

/// Refuses a call that could destroy its own input: no shards, or an output that is one of the inputs.
fn check_paths(args: &MergeArgs) -> anyhow::Result<()> {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if args.shards.is_empty() {
        bail!("no shard files given");
    }
    if let Some(p) = args
        .shards
        .iter()
        .chain([&args.input])
        .find(|p| same(p, &args.output))
    {
        bail!(
            "--output {} is also an input ({}): merge writes a new file",
            args.output.display(),
            p.display()
        );
    }
    Ok(())
}

/// The policies of lines that name none.
struct Defaults {
    policies: Vec<String>,
    /// Whether `policies` is the order `score` wrote them in (given by `--policies`); found ones are not,
    /// so their records follow the shard files.
    ordered: bool,
}

/// `--policies`, else the policies found in the shard files (noted in the summary, which says so).
fn default_policies(
    args: &MergeArgs,
    records: &HashMap<Key, Record>,
    summary: &mut MergeSummary,
) -> Defaults {
    match &args.policies {
        Some(p) => Defaults {
            policies: p.clone(),
            ordered: true,
        },
        None => {
            let found = policies_in(records);
            summary.inferred_policies = Some(found.clone());
            Defaults {
                policies: found,
                ordered: false,
            }
        }
    }
}

/// Takes each input line's expected records out of `records`, in input order, noting unreadable lines,
/// repeated ids and missing pairs.
fn in_input_order(
    text: &str,
    defaults: &Defaults,
    records: &mut HashMap<Key, Record>,
    problems: &mut Problems,
) -> Vec<BatchRecord> {
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<BatchRecord> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let (id, expected) =
            match expected_of(number, line, &defaults.policies, defaults.ordered, records) {
                Ok(e) => e,
                Err(e) => {
                    problems.add("unreadable input lines", e);
                    continue;
                }
            };
        if !id.is_empty()
            && let Some(first) = ids.insert(id.clone(), number)
        {
            problems.add(
                "repeated input ids (merge cannot tell their records apart)",
                format!("id {id} on lines {first} and {number}"),
            );
        }
        out.extend(take_expected(expected, records, problems));
    }
    out
}

/// One input line's records, in the order `score` writes them; a missing one is a problem.
fn take_expected(
    expected: Expected,
    records: &mut HashMap<Key, Record>,
    problems: &mut Problems,
) -> Vec<BatchRecord> {
    let mut found: Vec<Record> = Vec::new();
    for key in expected.keys {
        match records.remove(&key) {
            Some(r) => found.push(r),
            None => problems.add("missing pairs", key.to_string()),
        }
    }
    if !expected.ordered {
        found.sort_by_key(|r| r.origin);
    }
    found.into_iter().map(|r| r.value).collect()
}

/// Records left over once every input line took its own: the shards answer another question.
fn report_unasked(records: &HashMap<Key, Record>, problems: &mut Problems) {
    let mut extra: Vec<&Record> = records.values().collect();
    extra.sort_by_key(|r| r.origin);
    for r in extra {
        problems.add(
            "records the input does not ask for (another input, or other --policies?)",
            format!("{}: {}", r.place, r.value.key()),
        );
    }
}

/// Writes the records as JSONL to a temporary file beside `path`, then renames it over `path`.
fn write_atomically(path: &Path, records: &[BatchRecord]) -> anyhow::Result<()> {
    let tmp = path.with_extension("merge-tmp");
    let write = || -> std::io::Result<()> {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for r in records {
            w.write_all(r.to_line().as_bytes())?;
            w.write_all(b"\n")?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// The summary line printed on stderr.
impl std::fmt::Display for MergeSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "merged {} records ({} errors), dropped {} duplicates",
            self.written, self.errors, self.duplicates
        )?;
        if let Some(p) = &self.inferred_policies {
            write!(
                f,
                "; default policies (found in the shard files; pass --policies to check for a policy missing \
                 from every shard): {}",
                p.join(", ")
            )?;
        }
        let fps: Vec<String> = self
            .fingerprints
            .iter()
            .map(|(p, fp)| format!("{p}={fp}"))
            .collect();
        write!(f, "; fingerprints: {}", fps.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_lines_expect_their_pairs_or_their_error_record() {
        let none = HashMap::new();
        let defaults = vec!["p0".to_string(), "p1".to_string()];
        let (id, e) = expected_of(3, r#"{"prompt": "a"}"#, &defaults, true, &none).unwrap();
        assert_eq!(id, "3");
        assert_eq!(
            e.keys,
            vec![
                Key::Pair {
                    id: "3".into(),
                    policy: "p0".into()
                },
                Key::Pair {
                    id: "3".into(),
                    policy: "p1".into()
                }
            ]
        );
        let (_, e) = expected_of(
            3,
            r#"{"id": "x", "policies": ["p1"]}"#,
            &defaults,
            false,
            &none,
        )
        .unwrap();
        assert!(e.ordered);
        assert_eq!(
            e.keys,
            vec![Key::Pair {
                id: "\"x\"".into(),
                policy: "p1".into()
            }]
        );
        let (_, e) = expected_of(5, "{not json", &defaults, true, &none).unwrap();
        assert_eq!(e.keys, vec![Key::Line(5)]);
        assert!(expected_of(5, r#"{"policies": "p0"}"#, &defaults, true, &none).is_err());
    }
}
