//! Fuzzing the request bodies of every POST endpoint against the real server on SmolLM2:
//! valid requests, mutated (wrong types, extra and missing fields, extreme numbers, token ids out of the
//! vocabulary, deep nesting, hostile text) and then, now and then, damaged as bytes (truncated, invalid
//! UTF-8, duplicate keys, NaN). Every answer must be a 2xx, or a 4xx in the error shape naming a field that
//! the request has; never a 5xx, never a dropped connection, and the server answers /health afterwards.
//!
//! `LLAMA_SCORER_FUZZ_CASES` bounds the cases per test (default [`DEFAULT_CASES`]) and
//! `LLAMA_SCORER_FUZZ_SECONDS` their time (default [`DEFAULT_SECONDS`]: with two tests at a time, about a
//! minute in all); `make fuzz` runs many more. A failure prints the (shrunk) request and the command that
//! replays it (`LLAMA_SCORER_FUZZ_SEED`), and proptest keeps the case in `proptest-regressions/` to try
//! first next time.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestError, TestRunner};
use serde_json::{Value, json};

use crate::common::*;
use crate::fuzz_strategies::{hostile_json, hostile_text};

/// Cases per test when `LLAMA_SCORER_FUZZ_CASES` is not set.
const DEFAULT_CASES: u32 = 200;
/// Seconds per test after which no new chunk starts, when `LLAMA_SCORER_FUZZ_SECONDS` is not set.
const DEFAULT_SECONDS: u32 = 20;
/// Cases per proptest run (each run its own seed).
const CHUNK: u32 = 10;

const POLICY: &str = "fz";
const POLICY_SYSTEM: &str = "fz-system";
/// SmolLM2's vocabulary size: ids 0..VOCAB are valid.
const VOCAB: i64 = 49_152;

/// A server of its own: SmolLM2 with a small context (any generation stays short), a policy with a system
/// prompt, small batch and body limits so that both are met.
fn fuzz_server() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut plain = policy(POLICY, smol_path());
        plain.n_ctx = Some(64);
        let mut system = policy(POLICY_SYSTEM, smol_path());
        system.n_ctx = Some(64);
        system.system_prompt = Some("Be brief.".into());
        let mut cfg = base_config(vec![plain, system]);
        cfg.http.max_batch_items = 4;
        cfg.http.max_body_bytes = 256 << 10;
        spawn_server(cfg)
    })
}

/// The seed of this run: `LLAMA_SCORER_FUZZ_SEED`, else one from the clock (printed on failure).
fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        std::env::var("LLAMA_SCORER_FUZZ_SEED")
            .ok()
            .map(|s| s.parse().expect("LLAMA_SCORER_FUZZ_SEED is a u64"))
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            })
    })
}

/// A count from the environment, else `default`.
fn env_count(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .map(|s| s.parse().unwrap_or_else(|_| panic!("{name} is a count")))
        .unwrap_or(default)
}

// --- valid requests ------------------------------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(&["What is the capital of France?", " Paris.", "Hello", " ok", "1 + 1 ="][..])
            .prop_map(String::from),
        1 => hostile_text(),
    ]
}

fn ids() -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(0..VOCAB, 1..6)
}

fn message() -> impl Strategy<Value = Value> {
    let role = prop::sample::select(&["user", "assistant", "system"][..]);
    (role, text()).prop_map(|(role, content)| json!({"role": role, "content": content}))
}

fn messages() -> impl Strategy<Value = Value> {
    prop::collection::vec(message(), 1..4).prop_map(Value::from)
}

fn model() -> impl Strategy<Value = Value> {
    prop::sample::select(&[POLICY, POLICY_SYSTEM][..]).prop_map(Value::from)
}

/// One `{prompt…, response…}` of the native API.
fn item() -> impl Strategy<Value = Value> {
    let prompt = prop_oneof![
        text().prop_map(|t| ("prompt", json!(t))),
        messages().prop_map(|m| ("messages", m)),
        ids().prop_map(|t| ("prompt_token_ids", json!(t))),
    ];
    let response = prop_oneof![
        text().prop_map(|t| ("response", json!(t))),
        ids().prop_map(|t| ("response_token_ids", json!(t))),
    ];
    (prompt, response).prop_map(|((pk, pv), (rk, rv))| json!({pk: pv, rk: rv}))
}

fn logprobs_request() -> impl Strategy<Value = Value> {
    let items = prop_oneof![
        item().prop_map(|i| i.as_object().unwrap().clone()),
        prop::collection::vec(item(), 1..4)
            .prop_map(|v| json!({"items": v}).as_object().unwrap().clone()),
    ];
    (
        model(),
        items,
        0u32..4,
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(&[0.5, 1.0, 2.0][..]),
    )
        .prop_map(|(model, items, top, echo, eot, t)| {
            let mut v = json!({"model": model, "top_logprobs": top, "echo": echo,
                               "score_end_of_turn": eot, "temperature": t});
            v.as_object_mut().unwrap().extend(items);
            v
        })
}

/// The sampling fields, with values that keep any generation short (most requests only score).
fn sampling() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(&[0u32, 0, 0, 1, 2][..]),
        prop::sample::select(&[1u32, 1, 1, 2][..]),
        prop::sample::select(&[0.0, 0.7, 1.0][..]),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(|(max_tokens, n, temperature, seed, stream)| {
            json!({"max_tokens": max_tokens, "n": n, "temperature": temperature, "seed": seed,
                   "stream": stream, "top_p": 0.9, "stop": ["\n"], "logit_bias": {"30": 1.0}})
        })
}

fn completions_request() -> impl Strategy<Value = Value> {
    let prompt = prop_oneof![
        text().prop_map(Value::from),
        prop::collection::vec(text(), 1..3).prop_map(Value::from),
        ids().prop_map(Value::from),
        prop::collection::vec(ids(), 1..3).prop_map(Value::from),
    ];
    let logprobs = prop_oneof![
        Just(json!(null)),
        Just(json!(true)),
        (0u32..3).prop_map(Value::from)
    ];
    (model(), prompt, logprobs, any::<bool>(), sampling()).prop_map(
        |(model, prompt, logprobs, echo, s)| {
            let mut v =
                json!({"model": model, "prompt": prompt, "echo": echo, "logprobs": logprobs});
            v.as_object_mut()
                .unwrap()
                .extend(s.as_object().unwrap().clone());
            v
        },
    )
}

fn chat_request() -> impl Strategy<Value = Value> {
    (
        model(),
        messages(),
        any::<bool>(),
        0u32..3,
        any::<bool>(),
        sampling(),
    )
        .prop_map(|(model, messages, logprobs, top, echo, s)| {
            let mut v =
                json!({"model": model, "messages": messages, "logprobs": logprobs, "echo": echo});
            if logprobs {
                v["top_logprobs"] = json!(top);
            }
            v.as_object_mut()
                .unwrap()
                .extend(s.as_object().unwrap().clone());
            v
        })
}

// --- mutations -----------------------------------------------------------------------------------------

/// Keys a mutation touches: the endpoints' fields, and others.
fn key() -> impl Strategy<Value = String> {
    let known = prop::sample::select(
        &[
            "model",
            "prompt",
            "messages",
            "prompt_token_ids",
            "response",
            "response_token_ids",
            "items",
            "top_logprobs",
            "echo",
            "score_end_of_turn",
            "temperature",
            "max_tokens",
            "n",
            "logprobs",
            "stream",
            "stream_options",
            "echo_last",
            "seed",
            "stop",
            "top_p",
            "top_k",
            "min_p",
            "logit_bias",
            "repetition_penalty",
            "frequency_penalty",
            "presence_penalty",
            "context_length_exceeded_behavior",
            "return_token_ids",
            "max_completion_tokens",
            "user",
            "role",
            "content",
            "name",
        ][..],
    );
    prop_oneof![6 => known.prop_map(String::from), 1 => hostile_text()]
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Sets a key of the object at a path chosen by `at` (the body, an item, a message) to a value.
    Set {
        at: usize,
        key: String,
        value: Value,
    },
    /// Removes a key of that object.
    Remove { at: usize, key: String },
}

/// JSON pointers to every object in `v` (the body first), for mutations to pick from.
fn objects(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            out.push(at.to_string());
            for (k, x) in map {
                let k = k.replace('~', "~0").replace('/', "~1");
                objects(x, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                objects(x, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), key(), hostile_json()).prop_map(|(at, key, value)| Mutation::Set { at, key, value }),
        1 => (any::<usize>(), key()).prop_map(|(at, key)| Mutation::Remove { at, key }),
    ]
}

fn mutate(mut v: Value, mutations: &[Mutation]) -> Value {
    for m in mutations {
        let mut pointers = Vec::new();
        objects(&v, "", &mut pointers);
        let (Mutation::Set { at, .. } | Mutation::Remove { at, .. }) = m;
        let Some(object) = pointers
            .get(at % pointers.len().max(1))
            .and_then(|p| v.pointer_mut(p))
            .and_then(Value::as_object_mut)
        else {
            break;
        };
        match m {
            Mutation::Set { key, value, .. } => {
                object.insert(key.clone(), value.clone());
            }
            Mutation::Remove { key, .. } => {
                object.remove(key);
            }
        }
    }
    v
}

/// Damage done to the serialized body.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Truncate(usize),
    /// Bytes that are not UTF-8 (a lone continuation byte, 0xFF, an encoded surrogate) at a position.
    Insert(usize, Vec<u8>),
    /// The first key written twice, with another value.
    DuplicateKey(Value),
    /// The first number replaced by something JSON does not allow.
    Number(&'static str),
    Prefix(&'static [u8]),
}

/// What may stand before a body: a BOM, a NUL, whitespace, the start of another value.
const PREFIXES: &[&[u8]] = &[b"\xef\xbb\xbf", b"\x00", b" \n\t", b"[", b"{}"];

fn damage() -> impl Strategy<Value = Damage> {
    let bad_bytes = prop::sample::select(vec![
        vec![0x80],
        vec![0xff],
        vec![0xc3],
        vec![0xed, 0xa0, 0x80],
        vec![0],
    ]);
    prop_oneof![
        12 => Just(Damage::None),
        1 => any::<usize>().prop_map(Damage::Truncate),
        1 => (any::<usize>(), bad_bytes).prop_map(|(at, b)| Damage::Insert(at, b)),
        1 => hostile_json().prop_map(Damage::DuplicateKey),
        1 => prop::sample::select(&["NaN", "Infinity", "-Infinity", "1e999", "-0", "01", "1.", "0x10"][..])
            .prop_map(Damage::Number),
        1 => prop::sample::select(PREFIXES).prop_map(Damage::Prefix),
    ]
}

fn damaged(v: &Value, damage: &Damage) -> Vec<u8> {
    let text = v.to_string();
    let mut bytes = text.clone().into_bytes();
    match damage {
        Damage::None => {}
        Damage::Truncate(at) => bytes.truncate(at % bytes.len().max(1)),
        Damage::Insert(at, b) => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Damage::DuplicateKey(value) => {
            if let Some((k, _)) = v.as_object().and_then(|o| o.iter().next()) {
                let entry = format!("{}:{value},", Value::from(k.as_str()));
                bytes.splice(1..1, entry.into_bytes());
            }
        }
        Damage::Number(s) => {
            if let Some(start) = text.find(|c: char| c.is_ascii_digit()) {
                let end = text[start..]
                    .find(|c: char| !c.is_ascii_digit())
                    .map_or(text.len(), |e| start + e);
                bytes.splice(start..end, s.bytes());
            }
        }
        Damage::Prefix(p) => {
            bytes.splice(0..0, p.iter().copied());
        }
    }
    bytes
}

// --- the oracle ----------------------------------------------------------------------------------------

/// Whether `param` (e.g. `items[1].response_token_ids[3]`) is a path into `request`; its last part may be
/// a required field the request left out (`prompt`, `response`, `model`).
fn names_a_field(request: &Value, param: &str) -> bool {
    // What follows a part: nothing, `.key` or `[i]`.
    let next = |v: &Value, tail: &str| match tail.strip_prefix('.') {
        Some(key) => v.is_object() && names_a_field(v, key),
        None => tail.is_empty() || tail.starts_with('[') && names_a_field(v, tail),
    };
    // A key named exactly so (the fuzzer's keys may look like paths: `[`, `a.b`).
    if request.as_object().is_some_and(|o| o.contains_key(param)) {
        return true;
    }
    if let Some(after) = param.strip_prefix('[') {
        let Some((index, tail)) = after.split_once(']') else {
            return false;
        };
        return match (request.as_array(), index.parse::<usize>()) {
            (Some(items), Ok(i)) => items.get(i).is_some_and(|x| next(x, tail)),
            _ => false,
        };
    }
    let Some(object) = request.as_object() else {
        return false;
    };
    let found = object.iter().any(|(k, v)| {
        param
            .strip_prefix(k.as_str())
            .is_some_and(|tail| next(v, tail))
    });
    found || ["prompt", "response", "model"].contains(&param)
}

/// Checks one answer against the contract; `Err` says what is wrong. `structure` is the request before
/// its bytes were damaged: a field named in an error must be one of its fields (a truncated body can still
/// fail on a field before the cut), and it stands in for a body nested past serde_json's depth limit.
fn check_answer(
    request: &[u8],
    structure: Option<&Value>,
    status: u16,
    content_type: &str,
    body: &str,
) -> Result<(), String> {
    let parsed: Option<Value> = serde_json::from_slice(request).ok();
    let sent_object = parsed.as_ref().or(structure).filter(|v| v.is_object());
    match status {
        200..=299 => {
            if !parsed.as_ref().is_some_and(Value::is_object) {
                return Err("a body that is not a JSON object was accepted".into());
            }
            if content_type.starts_with("text/event-stream") {
                let events: Vec<&str> = body
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                if events.last() != Some(&"[DONE]") {
                    return Err("the stream does not end with [DONE]".into());
                }
                if let Some(e) = events.iter().find(|e| e.contains("\"error\"")) {
                    return Err(format!("the stream carries an error: {e}"));
                }
                return Ok(());
            }
            let v: Value =
                serde_json::from_str(body).map_err(|e| format!("2xx body is not JSON: {e}"))?;
            for item in v["data"].as_array().into_iter().flatten() {
                for key in ["logprob", "sampling_logprob"] {
                    let x = item[key].as_f64().ok_or(format!("{key} is not a number"))?;
                    if !(x.is_finite() && x <= 0.0) {
                        return Err(format!("{key} = {x} is not a log-probability"));
                    }
                }
            }
            Ok(())
        }
        400..=499 => {
            let v: Value =
                serde_json::from_str(body).map_err(|e| format!("4xx body is not JSON: {e}"))?;
            let e = &v["error"];
            let shaped = e["object"] == "error"
                && e["type"].is_string()
                && e["code"].is_string()
                && e["message"].as_str().is_some_and(|m| !m.is_empty())
                && (e.get("param").is_none() || e["param"].as_str().is_some_and(|p| !p.is_empty()));
            if !shaped {
                return Err("the 4xx body is not in the error shape".into());
            }
            match (e["param"].as_str(), sent_object) {
                (Some(p), Some(sent)) if !names_a_field(sent, p) => {
                    Err(format!("param `{p}` names no field of the request"))
                }
                (Some(p), None) => Err(format!("param `{p}` for a body that is not an object")),
                _ => Ok(()),
            }
        }
        _ => Err(format!("status {status}")),
    }
}

/// A request: its path, its bytes, and the structure they were made from (before any damage).
type Request = (String, Vec<u8>, Option<Value>);

/// What a test expects of an answer beyond the contract: given what was sent, the status and the JSON body
/// (`null` for a stream), `Err` says what is wrong.
type Expect = dyn Fn(&Value, u16, &Value) -> Result<(), String>;

/// Sends `body` to `path` and checks the answer against the contract and `expect`; the message of a failure
/// carries the request.
fn send_and_check((path, body, structure): &Request, expect: &Expect) -> Result<(), TestCaseError> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let request = String::from_utf8_lossy(&body[..body.len().min(2000)]).into_owned();
    let fail = |what: String| {
        TestCaseError::fail(format!(
            "POST {path} {request:?} ({} bytes): {what}",
            body.len()
        ))
    };
    let started = Instant::now();
    let r = client
        .post(format!("{}{path}", fuzz_server()))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .map_err(|e| fail(format!("no answer: {e}")))?;
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = r.text().map_err(|e| fail(format!("answer cut: {e}")))?;
    if started.elapsed() > Duration::from_secs(2) {
        eprintln!(
            "slow ({:.1} s): POST {path} {request:.300}",
            started.elapsed().as_secs_f64()
        );
    }
    check_answer(body, structure.as_ref(), status, &content_type, &text)
        .and_then(|()| {
            let answer = serde_json::from_str(&text).unwrap_or(Value::Null);
            expect(structure.as_ref().unwrap_or(&Value::Null), status, &answer)
        })
        .map_err(|e| fail(format!("{status} {e}: {text:.600}")))
}

/// Runs up to `LLAMA_SCORER_FUZZ_CASES` requests drawn from `requests`, stopping early once
/// `LLAMA_SCORER_FUZZ_SECONDS` have passed (so a slow or busy machine keeps CI's time bounded; the count run
/// is printed), then checks that the server is still healthy. The cases run in chunks of [`CHUNK`], chunk k
/// with seed + k, so a failure is replayed by its chunk's seed alone.
fn fuzz(name: &str, requests: impl Strategy<Value = Request>) {
    fuzz_expecting(name, requests, &|_, _, _| Ok(()));
}

/// [`fuzz`], each answer also held to `expect`.
fn fuzz_expecting(name: &str, requests: impl Strategy<Value = Request>, expect: &Expect) {
    let cases = env_count("LLAMA_SCORER_FUZZ_CASES", DEFAULT_CASES);
    let budget =
        Duration::from_secs(env_count("LLAMA_SCORER_FUZZ_SECONDS", DEFAULT_SECONDS).into());
    let started = Instant::now();
    let mut done = 0;
    while done < cases && started.elapsed() < budget {
        let n = (cases - done).min(CHUNK);
        let chunk_seed = seed().wrapping_add(u64::from(done / CHUNK));
        let mut runner = TestRunner::new(Config {
            cases: n,
            rng_seed: RngSeed::Fixed(chunk_seed),
            max_shrink_iters: 200,
            source_file: Some(file!()),
            ..Config::default()
        });
        let replay = format!(
            "replay: LLAMA_SCORER_FUZZ_SEED={chunk_seed} LLAMA_SCORER_FUZZ_CASES={n} cargo test --release --test it fuzz_http"
        );
        match runner.run(&requests, |request| send_and_check(&request, expect)) {
            Ok(()) => {}
            // The reason carries the (shrunk) request as text; the value would print it again as numbers.
            Err(TestError::Fail(reason, _)) => panic!("{name}: {reason}\n  {replay}"),
            Err(e) => panic!("{name}: {e}\n  {replay}"),
        }
        done += n;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{name}: {done} of {cases} cases in {secs:.1} s ({:.2}/s), seed {}",
        f64::from(done) / secs,
        seed()
    );
    let r = client()
        .get(format!("{}/health", fuzz_server()))
        .send()
        .unwrap();
    assert!(
        r.status().is_success(),
        "/health after {name}: {}",
        r.status()
    );
}

/// A request to `endpoint` under either prefix: `body`, mutated, then damaged.
fn requests(
    endpoint: &'static str,
    body: impl Strategy<Value = Value>,
) -> impl Strategy<Value = Request> {
    let prefix = prop::sample::select(&["/v1", "/inference/v1"][..]);
    (
        prefix,
        body,
        prop::collection::vec(mutation(), 0..4),
        damage(),
    )
        .prop_map(move |(prefix, v, mutations, damage)| {
            let v = mutate(v, &mutations);
            let bytes = damaged(&v, &damage);
            (format!("{prefix}{endpoint}"), bytes, Some(v))
        })
}

#[test]
fn fuzz_http_logprobs() {
    fuzz("logprobs", requests("/logprobs", logprobs_request()));
}

#[test]
fn fuzz_http_completions() {
    fuzz(
        "completions",
        requests("/completions", completions_request()),
    );
}

#[test]
fn fuzz_http_chat() {
    fuzz("chat", requests("/chat/completions", chat_request()));
}

#[test]
fn fuzz_http_arbitrary_bytes() {
    let endpoint = prop::sample::select(&["/logprobs", "/completions", "/chat/completions"][..]);
    let body = prop::collection::vec(any::<u8>(), 0..64);
    fuzz(
        "bytes",
        (endpoint, body).prop_map(|(e, b)| (format!("/v1{e}"), b, None)),
    );
}

/// Token-id lists against the vocabulary's size (SmolLM2's 49,152, from its GGUF metadata, not from the
/// server): the first id outside it is refused by its position; lists that fit are scored token for token.
#[test]
fn fuzz_http_token_ids() {
    let id = prop_oneof![
        8 => 0..VOCAB,
        1 => Just(VOCAB),
        1 => Just(-1i64),
        1 => any::<i64>(),
    ];
    let ids = move |n: std::ops::Range<usize>| prop::collection::vec(id.clone(), n);
    let requests = (ids(1..12), ids(0..60), any::<bool>()).prop_map(|(prompt, response, native)| {
        let body = if native {
            json!({"model": POLICY, "prompt_token_ids": prompt, "response_token_ids": response})
        } else {
            json!({"model": POLICY, "prompt": prompt, "max_tokens": 0, "echo": true, "logprobs": 0})
        };
        let path = if native { "/v1/logprobs" } else { "/v1/completions" };
        (path.to_string(), body.to_string().into_bytes(), Some(body))
    });
    fuzz_expecting("token ids", requests, &expect_ids_scored_or_refused);
}

/// The token-id oracle: the first id outside the vocabulary is refused by position, in the prompt first; a
/// sequence longer than the context (64) is refused; else every id is scored, in order.
fn expect_ids_scored_or_refused(sent: &Value, status: u16, answer: &Value) -> Result<(), String> {
    let native = sent.get("prompt_token_ids").is_some();
    let fields: &[&str] = if native {
        &["prompt_token_ids", "response_token_ids"]
    } else {
        &["prompt"]
    };
    let ids = |f: &str| -> Vec<i64> {
        sent[f]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect()
    };
    let first_bad = fields.iter().find_map(|f| {
        ids(f)
            .iter()
            .position(|i| !(0..VOCAB).contains(i))
            .map(|j| format!("{f}[{j}]"))
    });
    let total: usize = fields.iter().map(|f| ids(f).len()).sum();
    let scored_ids: Vec<i64> = if native {
        let content = answer["data"][0]["logprobs"]["content"].as_array();
        content
            .into_iter()
            .flatten()
            .filter_map(|t| t["token_id"].as_i64())
            .collect()
    } else {
        let echoed = answer["choices"][0]["logprobs"]["token_ids"].as_array();
        echoed
            .into_iter()
            .flatten()
            .filter_map(Value::as_i64)
            .collect()
    };
    let expected_ids = ids(fields[fields.len() - 1]);
    match first_bad {
        Some(param) if status == 400 && answer["error"]["param"] == json!(param) => Ok(()),
        Some(param) => Err(format!("expected 400 naming {param}")),
        None if total > 64 => match answer["error"]["code"].as_str() {
            Some("context_length_exceeded") if status == 400 => Ok(()),
            _ => Err(format!(
                "{total} tokens in a context of 64 were not refused"
            )),
        },
        None if status == 200 && scored_ids == expected_ids => Ok(()),
        None => Err(format!(
            "expected {expected_ids:?} scored, got {scored_ids:?}"
        )),
    }
}

// --- what the fuzzing found, kept as regression tests ---------------------------------------------------

/// POSTs `body` to the fuzz server; returns the status and the error's `param` (or `null`).
fn refused(path: &str, body: impl Into<Vec<u8>>) -> (u16, Value) {
    let (status, v) = post_raw(fuzz_server(), path, body.into());
    (status, v["error"]["param"].clone())
}

/// Found by the parsing property tests, confirmed over HTTP: serde's derive read a struct from a list,
/// its fields by position, so these bodies were scored (200) and `[true]` turned `include_usage` on.
#[test]
fn fuzz_http_lists_are_not_objects() {
    let body = r#"["fz", "The capital of France is", null, null, " Paris", null, null, 0, false, false, null]"#;
    assert_eq!(refused("/v1/logprobs", body), (400, Value::Null));
    let body = r#"{"model": "fz", "messages": [["user", "hi"]], "response": " Paris"}"#;
    assert_eq!(refused("/v1/logprobs", body), (400, json!("messages[0]")));
    let body = r#"{"model": "fz", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1,
                   "stream": true, "stream_options": [true]}"#;
    assert_eq!(
        refused("/v1/chat/completions", body),
        (400, json!("stream_options"))
    );
}

/// Found by `fuzz_http_completions`: an error in the i-th of several prompts named `prompt[i].prompt` (and
/// `prompt[i].prompt[j]` for a token id), which is no field of the request.
#[test]
fn fuzz_http_errors_in_one_of_several_prompts_name_its_path() {
    let long = "word ".repeat(100);
    let body = json!({"model": POLICY, "prompt": ["ok", long], "max_tokens": 0}).to_string();
    assert_eq!(refused("/v1/completions", body), (400, json!("prompt[1]")));
    let body = json!({"model": POLICY, "prompt": [[1], [2, VOCAB]], "max_tokens": 0}).to_string();
    assert_eq!(
        refused("/v1/completions", body),
        (400, json!("prompt[1][1]"))
    );
}

/// Found by `fuzz_http_arbitrary_bytes` and the byte damage: a JSON syntax error named where the parser
/// stopped as the field (`?` for a key with invalid UTF-8, `logit_bias` for a body cut after that key).
#[test]
fn fuzz_http_syntax_errors_name_no_field() {
    for body in [
        "{\"model\": \"fz\", \"pro\u{fffd}",
        "{\"model\": \"fz\", \"prompt\":",
        "[\u{0}",
    ] {
        for path in ["/v1/logprobs", "/v1/completions"] {
            assert_eq!(refused(path, body), (400, Value::Null), "{path} {body:?}");
        }
    }
    let body = &b"{\"model\": \"fz\", \"pro\xffmpt\": 1}"[..];
    assert_eq!(refused("/v1/completions", body), (400, Value::Null));
}
