//! `llama-scorer score`: batch scoring of a JSONL file under several policies, with no HTTP in between.
//!
//! Each input line is one item in the native API's shape (`prompt` | `messages` | `prompt_token_ids`, plus
//! `response` | `response_token_ids`) with an optional `id` and `policies` list. Each output line is one
//! (id, policy) result or its error. The output is appended and flushed chunk by chunk; a rerun skips every
//! (id, policy) already in it, so an interrupted run resumes where it stopped.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::engine::{Engine, ItemInput, Policy, PreparedItem, ScoreError, ScoreOptions, Scored};
use crate::input::{WireItem, fields_of, from_object, reject_unknown};

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
    policies: Vec<Arc<Policy>>,
    input: Result<ItemInput, String>,
}

/// Summary printed at the end.
#[derive(Debug, Default)]
pub struct ScoreSummary {
    pub written: usize,
    pub errors: usize,
    pub skipped: usize,
}

fn id_key(id: &Value, policy: &str) -> String {
    format!("{id}\u{0}{policy}")
}

/// Key of a line that could not be read (it has no id or policy to be known by).
fn line_key(number: usize) -> String {
    format!("\u{0}line {number}")
}

/// Reads the (id, policy) pairs already in `output` and cuts off a torn last line (an interrupted write).
fn resume_state(output: &Path) -> anyhow::Result<HashSet<String>> {
    let mut done = HashSet::new();
    let Ok(file) = File::open(output) else {
        return Ok(done);
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
    Ok(done)
}

fn parse_line(
    engine: &Engine,
    default_policies: &[Arc<Policy>],
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
        Some(names) => resolve_policies(engine, &names).map_err(|e| format!("policies: {e}"))?,
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
fn resolve_policies(engine: &Engine, names: &[String]) -> Result<Vec<Arc<Policy>>, String> {
    names
        .iter()
        .map(|n| {
            engine
                .policy(n)
                .cloned()
                .ok_or_else(|| format!("unknown policy `{n}`"))
        })
        .collect()
}

/// Runs the command; the engine is started from `cfg`.
pub fn run(cfg: Config, args: ScoreArgs) -> anyhow::Result<ScoreSummary> {
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    // (line number in the file, text) of every non-blank line.
    let raw: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l))
        .filter(|&(n, l)| {
            args.shard
                .is_none_or(|s| s.holds(&crate::shard::line_id(n, l)))
        })
        .collect();
    let engine = Engine::start(&cfg.engine_settings())?;
    let default_policies: Vec<Arc<Policy>> = match &args.policies {
        None => engine.policies().to_vec(),
        Some(names) => resolve_policies(&engine, names).map_err(|e| anyhow!("--policies: {e}"))?,
    };
    let done = resume_state(&args.output)?;
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    out.seek(SeekFrom::End(0))?;
    let bar = if args.progress {
        indicatif::ProgressBar::new(raw.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} lines  {per_sec}  eta {eta}  {msg}",
        )
        .expect("valid template"),
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let mut summary = ScoreSummary::default();
    for chunk in raw.chunks(args.chunk_lines.max(1)) {
        let lines: Vec<(usize, Result<Line, String>)> = chunk
            .iter()
            .map(|&(number, t)| (number, parse_line(&engine, &default_policies, number, t)))
            .collect();
        let records = runtime.block_on(score_chunk(&lines, &done, &args, &mut summary));
        for record in records {
            if record.get("error").is_some() {
                summary.errors += 1;
            }
            serde_json::to_writer(&mut out, &record)?;
            out.write_all(b"\n")?;
            summary.written += 1;
        }
        out.flush()?;
        bar.inc(chunk.len() as u64);
        bar.set_message(format!("{} errors", summary.errors));
    }
    bar.finish();
    engine.shutdown();
    if summary.written == 0 && summary.skipped == 0 && !raw.is_empty() {
        bail!("nothing was scored");
    }
    Ok(summary)
}

/// Scores one chunk: every (line, policy) pair not done yet, grouped per policy (one batch each).
async fn score_chunk(
    lines: &[(usize, Result<Line, String>)],
    done: &HashSet<String>,
    args: &ScoreArgs,
    summary: &mut ScoreSummary,
) -> Vec<Value> {
    let mut records: Vec<Option<Value>> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    let options_for = |p: &Policy| ScoreOptions {
        top_logprobs: 0,
        echo: false,
        score_end_of_turn: args.score_end_of_turn,
        temperature: p.temperature,
    };
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
            if done.contains(&id_key(&line.id, &policy.name)) {
                summary.skipped += 1;
                continue;
            }
            let base = json!({"id": line.id, "policy": policy.name});
            let prepared = match &line.input {
                Err(e) => Err(e.clone()),
                Ok(input) => policy
                    .prepare(input, &options_for(policy))
                    .map_err(|e| e.to_string()),
            };
            match prepared {
                Ok(item) => {
                    pending.push(Pending {
                        slot: records.len(),
                        id: line.id.clone(),
                        policy: policy.clone(),
                        item: Arc::new(item),
                    });
                    records.push(None);
                }
                Err(e) => records.push(Some(with_error(base, &e))),
            }
        }
    }
    // One batch per policy, all policies at once (policies on different models run in parallel).
    let names: indexmap::IndexSet<&str> = pending.iter().map(|p| p.policy.name.as_str()).collect();
    let batches = names.into_iter().map(|name| {
        let group: Vec<&Pending> = pending.iter().filter(|p| p.policy.name == name).collect();
        async move {
            let policy = &group[0].policy;
            let items: Vec<Arc<PreparedItem>> = group.iter().map(|p| p.item.clone()).collect();
            let results = score_isolating_errors(policy, items, &options_for(policy)).await;
            group.into_iter().zip(results).collect::<Vec<_>>()
        }
    });
    for (p, result) in futures_util::future::join_all(batches)
        .await
        .into_iter()
        .flatten()
    {
        records[p.slot] = Some(result_record(p, result, args.token_logprobs));
    }
    records.into_iter().flatten().collect()
}

/// Scores a batch; if the batch fails at run time, scores its items one by one so each error is recorded
/// against its own line.
async fn score_isolating_errors(
    policy: &Policy,
    items: Vec<Arc<PreparedItem>>,
    options: &ScoreOptions,
) -> Vec<Result<Scored, ScoreError>> {
    match policy.score(items.clone(), options).await {
        Ok(scores) => scores.into_iter().map(Ok).collect(),
        Err(_) if items.len() > 1 => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(
                    policy
                        .score(vec![item], options)
                        .await
                        .map(|mut v| v.remove(0)),
                );
            }
            out
        }
        Err(e) => vec![Err(e)],
    }
}

fn with_error(mut base: Value, message: &str) -> Value {
    base["error"] = json!({"message": message});
    base
}

/// A (line, policy) pair waiting for its score, and where its record goes.
struct Pending {
    slot: usize,
    id: Value,
    policy: Arc<Policy>,
    item: Arc<PreparedItem>,
}

fn result_record(p: &Pending, result: Result<Scored, ScoreError>, token_logprobs: bool) -> Value {
    let (policy, item) = (&p.policy, &p.item);
    match result {
        Err(e) => with_error(json!({"id": p.id, "policy": policy.name}), &e.to_string()),
        Ok(scored) => {
            let s = &scored.score;
            let mut v = json!({
                "id": p.id,
                "policy": policy.name,
                "logprob": s.logprob(),
                "sampling_logprob": s.sampling_logprob(),
                "temperature": policy.temperature,
                "prompt_tokens": item.prompt_len,
                "response_tokens": item.response_len(),
                "cached": scored.cached,
                "system_fingerprint": policy.system_fingerprint(),
            });
            if token_logprobs {
                v["token_ids"] = s.scored().map(|t| t.token).collect();
                v["token_logprobs"] = s.scored().map(|t| t.logprob).collect();
            }
            v
        }
    }
}
