//! `llama-scorer score`: batch scoring of a JSONL file under several policies, with no HTTP in between for
//! local policies (remote ones are called through their APIs, at most `max_concurrency` calls at a time each).
//!
//! Each input line is one item in the native API's shape (`prompt` | `messages` | `prompt_token_ids`, plus
//! `response` | `response_token_ids`) with an optional `id` and `policies` list. Each output line is one
//! (id, policy) result or its error. The output is appended and flushed chunk by chunk; a rerun skips every
//! (id, policy) already in it, so an interrupted run resumes where it stopped.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::record::{BatchRecord, ErrorText, ReadLine, RecordKey, Scored, id_text, read_records};
use super::weights::{WeightsReport, weights_report};
use crate::config::Config;
use crate::engine::{Engine, ItemInput, ScoreOptions};
use crate::input::{WireItem, fields_of, from_object, reject_unknown};
use crate::report::ItemReport;
use crate::served::{Policies, ServeError, ServedPolicy, score_each_together};

/// What `score` was asked to do.
pub struct ScoreArgs {
    pub input: PathBuf,
    pub output: PathBuf,
    /// Policies for lines that name none (default: every policy).
    pub policies: Option<Vec<String>>,
    /// Lines scored together (and written) at a time.
    pub chunk_lines: usize,
    pub score_end_of_turn: bool,
    /// Also write each token's log-probability.
    pub token_logprobs: bool,
    pub progress: bool,
    /// Score every line under this policy too, add `log_ratio` against it to the other policies' lines, and
    /// summarise the importance weights at the end.
    pub base: Option<String>,
    /// Where the weights summary goes (default: the output's path + `.summary.json`).
    pub summary: Option<PathBuf>,
    /// Score only the lines of this shard (by id, see [`crate::shard::line_id`]).
    pub shard: Option<crate::shard::ShardSpec>,
}

/// The fields of a line besides the item itself.
#[derive(Deserialize)]
struct LineMeta {
    id: Option<Value>,
    policies: Option<Vec<String>>,
}

/// One input line, parsed or not.
struct Line {
    id: Value,
    policies: Vec<ServedPolicy>,
    input: Result<ItemInput, String>,
}

/// Summary printed at the end.
#[derive(Debug, Default)]
pub struct ScoreSummary {
    pub written: usize,
    pub errors: usize,
    pub skipped: usize,
    /// With `--base`: the importance-weight summary of the whole output file.
    pub weights: Option<WeightsReport>,
}

/// Reads the records already in `output` (what a rerun skips) and cuts off a torn last line (an interrupted
/// write); a complete line that is not a record stops the run rather than being overwritten.
fn resume_state(
    output: &Path,
    base: Option<&str>,
) -> anyhow::Result<(HashSet<RecordKey>, BaseValues)> {
    let mut done = HashSet::new();
    let mut base_values = BaseValues::new();
    if !output.exists() {
        return Ok((done, base_values));
    }
    let mut good_len = 0u64;
    let mut unknown = None;
    read_records(output, |number, len, line| match line {
        ReadLine::Record(r) => {
            if let BatchRecord::Scored(s) = &r
                && Some(s.policy.as_str()) == base
            {
                base_values.insert(id_text(&s.id), s.sampling_logprob);
            }
            done.insert(r.key());
            good_len += len as u64;
            true
        }
        ReadLine::Unknown(why) => {
            unknown = Some((number, why));
            false
        }
        ReadLine::Garbled => {
            unknown = Some((number, "not a JSON object".to_string()));
            false
        }
        ReadLine::Blank => {
            good_len += len as u64;
            true
        }
        ReadLine::Torn => false,
    })
    .with_context(|| format!("cannot read {}", output.display()))?;
    if let Some((number, why)) = unknown {
        bail!(
            "{}: line {number} is not a line `score` writes ({why}); not resuming into it: pass another \
             --output or remove that line",
            output.display()
        );
    }
    let file = OpenOptions::new().write(true).open(output)?;
    file.set_len(good_len)?;
    Ok((done, base_values))
}

/// The base policy's sampling_logprob per item id (`None`: the base failed on it or has no such value).
type BaseValues = std::collections::HashMap<String, Option<f64>>;

/// Adds `log_ratio` (sampling_logprob − the base's for the same id) to the records of the other policies,
/// learning the base's values from `records` first; `null` where either side has no value.
fn add_log_ratios(records: &mut [BatchRecord], base: &str, base_values: &mut BaseValues) {
    for r in records.iter() {
        if let BatchRecord::Scored(s) = r
            && s.policy == base
        {
            base_values.insert(id_text(&s.id), s.sampling_logprob);
        }
    }
    for r in records.iter_mut() {
        if let BatchRecord::Scored(s) = r
            && s.policy != base
        {
            let base_value = base_values.get(&id_text(&s.id)).copied().flatten();
            s.log_ratio = Some(s.sampling_logprob.zip(base_value).map(|(p, b)| p - b));
        }
    }
}

fn parse_line(
    served: &Policies,
    default_policies: &[ServedPolicy],
    number: usize,
    text: &str,
) -> Result<Line, String> {
    let object: Map<String, Value> = match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err("not a JSON object".into()),
        Err(e) => return Err(format!("invalid JSON: {e}")),
    };
    let err = |e: crate::input::InputError| e.to_string();
    reject_unknown(&object, &[fields_of::<LineMeta>(), fields_of::<WireItem>()]).map_err(err)?;
    let meta: LineMeta = from_object(&object).map_err(err)?;
    let id = meta.id.unwrap_or_else(|| json!(number));
    let policies = match meta.policies {
        None => default_policies.to_vec(),
        Some(names) => resolve_policies(served, &names).map_err(|e| format!("policies: {e}"))?,
    };
    let mut item_object = object;
    item_object.remove("id");
    item_object.remove("policies");
    let input = from_object::<WireItem>(&item_object)
        .and_then(|w| w.into_input(""))
        .map_err(err);
    Ok(Line {
        id,
        policies,
        input,
    })
}

/// The policies `names` names, in that order, or which one is unknown.
fn resolve_policies(served: &Policies, names: &[String]) -> Result<Vec<ServedPolicy>, String> {
    names
        .iter()
        .map(|n| {
            served
                .get(n)
                .cloned()
                .ok_or_else(|| format!("unknown policy `{n}`"))
        })
        .collect()
}

/// Runs the command; the engine is started from `cfg`.
pub fn run(cfg: Config, args: ScoreArgs) -> anyhow::Result<ScoreSummary> {
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let raw = lines_to_score(&text, &args);
    let engine = Engine::start(&cfg.engine_settings())?;
    let served = Policies::new(
        &engine,
        cfg.remote_policies.clone(),
        cfg.cache,
        &cfg.policy_order,
    )
    .map_err(anyhow::Error::msg)?;
    let (default_policies, base) = chosen_policies(&served, &args)?;
    let (done, mut base_values) = resume_state(&args.output, args.base.as_deref())?;
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    out.seek(SeekFrom::End(0))?;
    let bar = progress_bar(args.progress, raw.len());
    let runtime = tokio::runtime::Runtime::new()?;
    let mut summary = ScoreSummary::default();
    for chunk in raw.chunks(args.chunk_lines.max(1)) {
        let lines: Vec<(usize, Result<Line, String>)> = chunk
            .iter()
            .map(|&(number, t)| {
                let mut line = parse_line(&served, &default_policies, number, t);
                // Every line is scored under the base too, so its log-ratios exist.
                if let (Ok(l), Some(b)) = (&mut line, &base)
                    && !l.policies.iter().any(|p| p.name() == b.name())
                {
                    l.policies.push(b.clone());
                }
                (number, line)
            })
            .collect();
        let (mut records, stopped) =
            runtime.block_on(score_chunk(&lines, &done, &args, &mut summary));
        if let Some(b) = &args.base {
            add_log_ratios(&mut records, b, &mut base_values);
        }
        write_records(&mut out, records, &mut summary)?;
        if let Some(e) = stopped {
            bar.abandon();
            bail!(
                "stopped: {e}; the {} lines written so far are kept, and a rerun with the same \
                 --output resumes after them",
                summary.written
            );
        }
        bar.inc(chunk.len() as u64);
        bar.set_message(format!("{} errors", summary.errors));
    }
    bar.finish();
    // The engine's guard stops and joins its threads when `run` returns, on every path.
    drop(engine);
    if summary.written == 0 && summary.skipped == 0 && !raw.is_empty() {
        bail!("nothing was scored");
    }
    if let Some(b) = &args.base {
        summary.weights = Some(write_weights_summary(&cfg, &args, b)?);
    }
    Ok(summary)
}

/// (line number in the file, text) of every non-blank line this run scores (its shard's, with `--shard`).
fn lines_to_score<'a>(text: &'a str, args: &ScoreArgs) -> Vec<(usize, &'a str)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l))
        .filter(|&(n, l)| {
            args.shard
                .is_none_or(|s| s.holds(&crate::shard::line_id(n, l)))
        })
        .collect()
}

/// The policies a line without its own list is scored under (`--policies`, else all; the base added when
/// not among them), and the base.
fn chosen_policies(
    served: &Policies,
    args: &ScoreArgs,
) -> anyhow::Result<(Vec<ServedPolicy>, Option<ServedPolicy>)> {
    let mut default_policies: Vec<ServedPolicy> = match &args.policies {
        None => served.all().to_vec(),
        Some(names) => resolve_policies(served, names).map_err(|e| anyhow!("--policies: {e}"))?,
    };
    let base = match &args.base {
        Some(name) => Some(
            served
                .get(name)
                .cloned()
                .ok_or_else(|| anyhow!("--base: unknown policy `{name}`"))?,
        ),
        None => None,
    };
    if let Some(b) = &base
        && !default_policies.iter().any(|p| p.name() == b.name())
    {
        default_policies.push(b.clone());
    }
    Ok((default_policies, base))
}

/// The progress bar on stderr (hidden with `--no-progress`).
fn progress_bar(shown: bool, lines: usize) -> indicatif::ProgressBar {
    let bar = if shown {
        indicatif::ProgressBar::new(lines as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} lines  {per_sec}  eta {eta}  {msg}",
        )
        .expect("valid template"),
    );
    bar
}

/// Appends one chunk's records to the output, one JSON line each, and flushes (a crash after this loses
/// nothing written), counting them and their errors.
fn write_records(
    out: &mut File,
    records: Vec<BatchRecord>,
    summary: &mut ScoreSummary,
) -> anyhow::Result<()> {
    for record in records {
        if record.is_error() {
            summary.errors += 1;
        }
        out.write_all(record.to_line().as_bytes())?;
        out.write_all(b"\n")?;
        summary.written += 1;
    }
    out.flush()?;
    Ok(())
}

/// The importance-weight summary against `base` over the whole output file, written next to it (or to
/// `--summary`).
fn write_weights_summary(
    cfg: &Config,
    args: &ScoreArgs,
    base: &str,
) -> anyhow::Result<WeightsReport> {
    let report = weights_report(&args.output, base, &cfg.configured_like(base))?;
    let path = args.summary.clone().unwrap_or_else(|| {
        let mut p = args.output.clone().into_os_string();
        p.push(".summary.json");
        PathBuf::from(p)
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(report)
}

/// Scores one chunk: every (line, policy) pair not done yet, one batch per policy (all policies at once:
/// policies on different models or remotes run in parallel, policies sharing a model share each decode).
/// Returns the records in input order, and the upstream failure that should stop the run, if any (its pairs
/// get no record, so a rerun retries them).
async fn score_chunk(
    lines: &[(usize, Result<Line, String>)],
    done: &HashSet<RecordKey>,
    args: &ScoreArgs,
    summary: &mut ScoreSummary,
) -> (Vec<BatchRecord>, Option<ServeError>) {
    let mut records: Vec<Option<BatchRecord>> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    for (line_number, line) in lines {
        let line = match line {
            Ok(l) => l,
            Err(_) if done.contains(&RecordKey::Line(*line_number as u64)) => {
                summary.skipped += 1;
                continue;
            }
            Err(e) => {
                records.push(Some(BatchRecord::Unreadable(super::record::Unreadable {
                    line: *line_number as u64,
                    error: ErrorText::new(e.as_str()),
                })));
                continue;
            }
        };
        for policy in &line.policies {
            if done.contains(&RecordKey::pair(&line.id, policy.name())) {
                summary.skipped += 1;
                continue;
            }
            match &line.input {
                Err(e) => records.push(Some(failed(&line.id, policy.name(), e))),
                Ok(input) => {
                    pending.push(Pending {
                        slot: records.len(),
                        id: line.id.clone(),
                        policy: policy.clone(),
                        input: input.clone(),
                    });
                    records.push(None);
                }
            }
        }
    }
    let names: indexmap::IndexSet<&str> = pending.iter().map(|p| p.policy.name()).collect();
    // Remote calls retry within this; a run is not interactive, so the bound is generous.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(24 * 3600);
    let groups: Vec<Vec<&Pending>> = names
        .into_iter()
        .map(|name| pending.iter().filter(|p| p.policy.name() == name).collect())
        .collect();
    let requests = groups
        .iter()
        .map(|group| {
            let policy = group[0].policy.clone();
            let options = ScoreOptions {
                top_logprobs: 0,
                echo: false,
                score_end_of_turn: args.score_end_of_turn,
                temperature: policy.temperature(),
            };
            let inputs = group.iter().map(|p| p.input.clone()).collect();
            (policy, inputs, options)
        })
        .collect();
    let results = score_each_together(requests, deadline).await;
    let scored = groups
        .into_iter()
        .zip(results)
        .flat_map(|(group, results)| group.into_iter().zip(results));
    let mut stop = None;
    for (p, result) in scored {
        match result {
            Err(ServeError::Remote(e)) if e.http_status() >= 500 => {
                stop.get_or_insert(ServeError::Remote(e));
            }
            result => records[p.slot] = Some(result_record(p, result, args.token_logprobs)),
        }
    }
    (records.into_iter().flatten().collect(), stop)
}

/// The record of a pair that could not be scored.
fn failed(id: &Value, policy: &str, message: &str) -> BatchRecord {
    BatchRecord::Failed(super::record::Failed {
        id: id.clone(),
        policy: policy.to_string(),
        error: ErrorText::new(message),
    })
}

/// A (line, policy) pair waiting for its score, and where its record goes.
struct Pending {
    slot: usize,
    id: Value,
    policy: ServedPolicy,
    input: ItemInput,
}

fn result_record(
    p: &Pending,
    result: Result<ItemReport, ServeError>,
    token_logprobs: bool,
) -> BatchRecord {
    let name = p.policy.name();
    match result {
        Err(e) => failed(&p.id, name, &e.to_string()),
        Ok(r) => BatchRecord::Scored(Scored {
            id: p.id.clone(),
            policy: name.to_string(),
            logprob: r.logprob,
            sampling_logprob: r.sampling_logprob,
            temperature: p.policy.temperature(),
            prompt_tokens: r.prompt_tokens,
            response_tokens: r.response_tokens,
            cached: r.cached,
            system_fingerprint: r.system_fingerprint,
            token_ids: token_logprobs.then(|| r.tokens.iter().map(|t| t.token_id).collect()),
            token_logprobs: token_logprobs.then(|| r.tokens.iter().map(|t| t.logprob).collect()),
            log_ratio: None,
        }),
    }
}
