//! `llama-scorer score`: batch scoring of a JSONL file under several policies, with no HTTP in between for
//! local policies (remote ones are called through their APIs, at most `max_concurrency` calls at a time each).
//!
//! Each input line is one item in the native API's shape (`prompt` | `messages` | `prompt_token_ids`, plus
//! `response` | `response_token_ids`) with an optional `id` and `policies` list. Each output line is one
//! (id, policy) result or its error. The output is appended and flushed chunk by chunk; a rerun skips every
//! (id, policy) already in it, so an interrupted run resumes where it stopped.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;
use serde_json::{Map, Value, json};

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
    pub weights: Option<crate::weights_report::WeightsReport>,
}

fn id_key(id: &Value, policy: &str) -> String {
    format!("{id}\u{0}{policy}")
}

/// Key of a line that could not be read (it has no id or policy to be known by).
fn line_key(number: usize) -> String {
    format!("\u{0}line {number}")
}

/// Reads the (id, policy) pairs already in `output` and cuts off a torn last line (an interrupted write).
fn resume_state(
    output: &Path,
    base: Option<&str>,
) -> anyhow::Result<(HashSet<String>, BaseValues)> {
    let mut done = HashSet::new();
    let mut base_values = BaseValues::new();
    let Ok(file) = File::open(output) else {
        return Ok((done, base_values));
    };
    let mut good_len = 0u64;
    let mut reader = BufReader::new(file);
    let mut buf = String::new();
    loop {
        buf.clear();
        let n = reader.read_line(&mut buf)?;
        if n == 0 {
            break;
        }
        let complete = buf.ends_with('\n');
        match serde_json::from_str::<Value>(buf.trim_end()) {
            Ok(v) if complete => {
                if base.is_some() && v["policy"].as_str() == base {
                    base_values.insert(v["id"].to_string(), v["sampling_logprob"].as_f64());
                }
                match v["policy"].as_str() {
                    Some(policy) => done.insert(id_key(&v["id"], policy)),
                    None => done.insert(line_key(v["line"].as_u64().unwrap_or(0) as usize)),
                };
                good_len += n as u64;
            }
            _ => break,
        }
    }
    let file = OpenOptions::new().write(true).open(output)?;
    file.set_len(good_len)?;
    Ok((done, base_values))
}

/// The base policy's sampling_logprob per item id (`None`: the base failed on it or has no such value).
type BaseValues = std::collections::HashMap<String, Option<f64>>;

/// Adds `log_ratio` (sampling_logprob − the base's for the same id) to the records of the other policies,
/// learning the base's values from `records` first; `null` where either side has no value.
fn add_log_ratios(records: &mut [Value], base: &str, base_values: &mut BaseValues) {
    for r in records.iter().filter(|r| r["policy"] == base) {
        base_values.insert(r["id"].to_string(), r["sampling_logprob"].as_f64());
    }
    for r in records.iter_mut() {
        if r["policy"] == base || r.get("error").is_some() || r.get("policy").is_none() {
            continue;
        }
        let ratio = r["sampling_logprob"]
            .as_f64()
            .zip(base_values.get(&r["id"].to_string()).copied().flatten())
            .map(|(p, b)| p - b);
        r["log_ratio"] = json!(ratio);
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
            engine.shutdown();
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
    engine.shutdown();
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
    records: Vec<Value>,
    summary: &mut ScoreSummary,
) -> anyhow::Result<()> {
    for record in records {
        if record.get("error").is_some() {
            summary.errors += 1;
        }
        serde_json::to_writer(&mut *out, &record)?;
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
) -> anyhow::Result<crate::weights_report::WeightsReport> {
    let report =
        crate::weights_report::weights_report(&args.output, base, &cfg.configured_like(base))?;
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
    done: &HashSet<String>,
    args: &ScoreArgs,
    summary: &mut ScoreSummary,
) -> (Vec<Value>, Option<ServeError>) {
    let mut records: Vec<Option<Value>> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    for (line_number, line) in lines {
        let line = match line {
            Ok(l) => l,
            Err(_) if done.contains(&line_key(*line_number)) => {
                summary.skipped += 1;
                continue;
            }
            Err(e) => {
                records.push(Some(json!({"line": line_number, "error": {"message": e}})));
                continue;
            }
        };
        for policy in &line.policies {
            if done.contains(&id_key(&line.id, policy.name())) {
                summary.skipped += 1;
                continue;
            }
            match &line.input {
                Err(e) => records.push(Some(with_error(
                    json!({"id": line.id, "policy": policy.name()}),
                    e,
                ))),
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

fn with_error(mut base: Value, message: &str) -> Value {
    base["error"] = json!({"message": message});
    base
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
) -> Value {
    let name = p.policy.name();
    match result {
        Err(e) => with_error(json!({"id": p.id, "policy": name}), &e.to_string()),
        Ok(r) => {
            let mut v = json!({
                "id": p.id,
                "policy": name,
                "logprob": r.logprob,
                "sampling_logprob": r.sampling_logprob,
                "temperature": p.policy.temperature(),
                "prompt_tokens": r.prompt_tokens,
                "response_tokens": r.response_tokens,
                "cached": r.cached,
                "system_fingerprint": r.system_fingerprint,
            });
            if token_logprobs {
                v["token_ids"] = r.tokens.iter().map(|t| t.token_id).collect();
                v["token_logprobs"] = r.tokens.iter().map(|t| t.logprob).collect();
            }
            v
        }
    }
}
