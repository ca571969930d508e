//! Remote policies: the remote scorer against a fault-injecting upstream written here, and
//! against this project's own binary serving all three wire formats.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use llama_scorer::engine::{ItemInput, PromptInput, ResponseInput, ScoreOptions};
use llama_scorer::remote::{
    ApiKey, Provider, RemoteError, RemoteScoreRequest, RemoteScored, RemoteScorer, RemoteSettings,
    affinity_key,
};
use serde_json::{Value, json};

use crate::common::{Running, free_port, post_to, serve_with, smol_path};

const KEY: &str = "sk-test-0123456789";

// --- a scripted upstream ----------------------------------------------------------------------------

/// What the upstream answers to its `n`-th request (0-based).
type Script = Arc<dyn Fn(usize, &Value, &HeaderMap) -> Response + Send + Sync>;

/// A fault-injecting upstream on 127.0.0.1: answers every path by `script`; counts requests and the
/// most in flight at once.
struct Upstream {
    base: String,
    hits: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start(delay: Duration, script: Script) -> Upstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (h, p) = (hits.clone(), peak.clone());
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let (h, p, now, script) = (h.clone(), p.clone(), now.clone(), script.clone());
            async move {
                let n = h.fetch_add(1, Ordering::SeqCst);
                p.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                now.fetch_sub(1, Ordering::SeqCst);
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                script(n, &body, &headers)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Upstream { base, hits, peak }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn script(f: impl Fn(usize, &Value, &HeaderMap) -> Response + Send + Sync + 'static) -> Script {
    Arc::new(f)
}

/// A completions echo answer with the given tokens (character offsets, as OpenAI-style servers give).
fn echo(tokens: &[&str], logprobs: &[f64]) -> Response {
    let mut at = 0;
    let offsets: Vec<usize> = tokens
        .iter()
        .map(|t| {
            let o = at;
            at += t.chars().count();
            o
        })
        .collect();
    axum::Json(
        json!({"id": "cmpl-1", "object": "text_completion", "choices": [{"index": 0,
        "text": tokens.concat(), "finish_reason": "length", "logprobs": {"tokens": tokens,
        "token_logprobs": logprobs, "top_logprobs": null, "text_offset": offsets}}]}),
    )
    .into_response()
}

/// "Hello world" as "Hello" + " world", the usual answer below.
fn hello() -> Response {
    echo(&["Hello", " world"], &[0.0, -2.5])
}

fn status(code: u16, headers: &[(&'static str, &str)], body: Value) -> Response {
    let mut r = (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response();
    for (k, v) in headers {
        r.headers_mut().insert(*k, v.parse().unwrap());
    }
    r
}

fn fireworks_error(message: &str) -> Value {
    json!({"error": {"object": "error", "type": "invalid_request_error", "message": message}})
}

/// The registered provider called `name`.
fn named(name: &str) -> Provider {
    Provider::named(name).expect("a registered provider")
}

fn settings(provider: Provider, base: &str) -> RemoteSettings {
    let mut s = RemoteSettings::new("remote-test", provider, "accounts/fireworks/models/test");
    s.base_url = Some(base.to_string());
    s.api_key = Some(ApiKey::new(KEY));
    s.timeout = Duration::from_secs(5);
    s.max_retries = 3;
    s
}

fn text_item(prompt: &str, response: &str) -> ItemInput {
    ItemInput {
        prompt: PromptInput::Text(prompt.into()),
        response: ResponseInput::Text(response.into()),
    }
}

fn request(items: Vec<ItemInput>, top: usize) -> RemoteScoreRequest {
    RemoteScoreRequest {
        items,
        options: ScoreOptions {
            top_logprobs: top,
            echo: false,
            score_end_of_turn: false,
            temperature: 1.0,
        },
    }
}

/// Scores "Hello" + " world" through `s` within `within`.
async fn score_hello(s: RemoteSettings, within: Duration) -> Result<RemoteScored, RemoteError> {
    let scorer = RemoteScorer::new(s).unwrap();
    let r = scorer
        .score(
            &request(vec![text_item("Hello", " world")], 0),
            Instant::now() + within,
        )
        .await;
    if let Err(e) = &r {
        let shown = format!("{e} {e:?} {:?}", scorer.status());
        assert!(!shown.contains(KEY), "the key leaked: {shown}");
    }
    r
}

#[tokio::test]
async fn a_straddling_token_is_a_token_boundary_error_naming_it() {
    let up = Upstream::start(Duration::ZERO, script(|_, _, _| hello())).await;
    let scorer = RemoteScorer::new(settings(named("fireworks"), &up.base)).unwrap();
    let far = Instant::now() + Duration::from_secs(10);
    let e = scorer
        .score(&request(vec![text_item("Hello wor", "ld")], 0), far)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        RemoteError::TokenBoundary {
            item: Some(0),
            token: " world".into(),
            start: 5,
            end: 11,
            boundary: 9
        }
    );
    assert_eq!((e.http_status(), e.code()), (422, "token_boundary"));
    assert_eq!(up.hits(), 1, "a boundary error is not retried");
    // The boundary at a token edge is exact.
    let ok = scorer
        .score(&request(vec![text_item("Hello", " world")], 0), far)
        .await
        .unwrap();
    assert_eq!(ok.items[0].logprob, -2.5);
    assert_eq!(ok.items[0].sampling_logprob, None);
    assert_eq!(ok.items[0].response_tokens, 1);
}

#[tokio::test]
async fn the_request_carries_the_key_model_and_echo_recipe() {
    let up = Upstream::start(
        Duration::ZERO,
        script(|_, body, headers| {
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
            let expected = json!({"model": "accounts/fireworks/models/test", "prompt": "Hello world",
                "echo": true, "max_tokens": 0, "logprobs": 2, "temperature": 1.0});
            if auth != Some(&format!("Bearer {KEY}")) || *body != expected {
                return status(400, &[], fireworks_error(&format!("unexpected {auth:?} {body}")));
            }
            hello()
        }),
    )
    .await;
    let scorer = RemoteScorer::new(settings(named("openai"), &up.base)).unwrap();
    let r = scorer
        .score(
            &request(vec![text_item("Hello", " world")], 2),
            Instant::now() + Duration::from_secs(10),
        )
        .await;
    assert_eq!(r.unwrap().items[0].logprob, -2.5);
    assert!(scorer.status().last_success.is_some());
    assert!(scorer.status().last_failure.is_none());
}

#[tokio::test]
async fn retry_after_is_honoured_then_success() {
    let up = Upstream::start(
        Duration::ZERO,
        script(|n, _, _| match n {
            0 => status(429, &[("retry-after", "1")], fireworks_error("slow down")),
            _ => hello(),
        }),
    )
    .await;
    let t0 = Instant::now();
    let r = score_hello(
        settings(named("fireworks"), &up.base),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(r.unwrap().items[0].logprob, -2.5);
    assert_eq!(up.hits(), 2);
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "waited {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn overload_past_the_retries_or_the_deadline_is_503() {
    let busy = script(|_, _, _| status(503, &[("retry-after", "0")], fireworks_error("busy")));
    let up = Upstream::start(Duration::ZERO, busy).await;
    let mut s = settings(named("fireworks"), &up.base);
    s.max_retries = 2;
    let e = score_hello(s, Duration::from_secs(10)).await.unwrap_err();
    assert!(
        matches!(
            e,
            RemoteError::Overloaded {
                status: 503,
                attempts: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!((up.hits(), e.http_status()), (3, 503));

    // A Retry-After past the deadline is not waited for.
    let later = script(|_, _, _| status(429, &[("retry-after", "30")], fireworks_error("later")));
    let up = Upstream::start(Duration::ZERO, later).await;
    let t0 = Instant::now();
    let e = score_hello(
        settings(named("fireworks"), &up.base),
        Duration::from_secs(2),
    )
    .await
    .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
    assert!(
        matches!(
            e,
            RemoteError::Overloaded {
                status: 429,
                attempts: 1,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn server_errors_back_off_then_succeed_or_end_as_502() {
    let up = Upstream::start(
        Duration::ZERO,
        script(|n, _, _| match n {
            0 | 1 => status(500, &[], json!({"error": "boom"})),
            _ => hello(),
        }),
    )
    .await;
    let r = score_hello(
        settings(named("fireworks"), &up.base),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(r.unwrap().items[0].logprob, -2.5);
    assert_eq!(up.hits(), 3);

    let up = Upstream::start(
        Duration::ZERO,
        script(|_, _, _| status(502, &[], json!({"error": "bad gateway"}))),
    )
    .await;
    let mut s = settings(named("fireworks"), &up.base);
    s.max_retries = 1;
    let e = score_hello(s, Duration::from_secs(10)).await.unwrap_err();
    assert_eq!(
        e,
        RemoteError::Upstream {
            remote: "remote-test".into(),
            status: 502,
            message: "bad gateway".into()
        }
    );
    assert_eq!((up.hits(), e.http_status()), (2, 502));
}

#[tokio::test]
async fn a_slow_upstream_times_out_within_the_deadline() {
    let up = Upstream::start(Duration::from_secs(5), script(|_, _, _| hello())).await;
    let mut s = settings(named("fireworks"), &up.base);
    s.timeout = Duration::from_millis(300);
    s.max_retries = 10;
    let t0 = Instant::now();
    let e = score_hello(s, Duration::from_millis(1500))
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(e, RemoteError::Timeout { .. }), "{e:?}");
    assert_eq!(e.http_status(), 504);
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert!(
        up.hits() >= 2,
        "per-attempt timeouts are retried: {}",
        up.hits()
    );
}

#[tokio::test]
async fn garbage_is_malformed_and_not_retried() {
    let up = Upstream::start(
        Duration::ZERO,
        script(|_, _, _| (StatusCode::OK, "{\"choices\": [oops").into_response()),
    )
    .await;
    let e = score_hello(
        settings(named("fireworks"), &up.base),
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, RemoteError::Malformed { .. }), "{e:?}");
    assert_eq!((up.hits(), e.http_status()), (1, 502));

    // Valid JSON that does not echo the text is no number either.
    let up = Upstream::start(
        Duration::ZERO,
        script(|_, _, _| echo(&["Hello", " word"], &[0.0, -1.0])),
    )
    .await;
    let e = score_hello(settings(named("openai"), &up.base), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(e, RemoteError::Malformed { .. }), "{e:?}");
}

#[tokio::test]
async fn connection_refused_is_unreachable_502() {
    let base = format!("http://127.0.0.1:{}", free_port());
    let mut s = settings(named("llama_scorer"), &base);
    s.max_retries = 2;
    let e = score_hello(s, Duration::from_secs(10)).await.unwrap_err();
    assert!(matches!(e, RemoteError::Unreachable { .. }), "{e:?}");
    assert_eq!(e.http_status(), 502);
}

#[tokio::test]
async fn an_unknown_model_is_502_with_the_upstreams_message() {
    let up = Upstream::start(
        Duration::ZERO,
        script(|_, _, _| {
            status(
                404,
                &[],
                fireworks_error("Model not found, inaccessible, and/or not deployed"),
            )
        }),
    )
    .await;
    let e = score_hello(
        settings(named("fireworks"), &up.base),
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e,
        RemoteError::UnknownModel {
            remote: "remote-test".into(),
            model: "accounts/fireworks/models/test".into(),
            message: "Model not found, inaccessible, and/or not deployed".into()
        }
    );
    assert_eq!((up.hits(), e.http_status()), (1, 502));
}

#[tokio::test]
async fn a_rejected_key_is_the_servers_problem_not_the_clients() {
    let up = Upstream::start(
        Duration::ZERO,
        script(|_, _, _| status(401, &[], fireworks_error(&format!("bad key {KEY}")))),
    )
    .await;
    let scorer = RemoteScorer::new(settings(named("fireworks"), &up.base)).unwrap();
    let e = scorer
        .score(
            &request(vec![text_item("Hello", " world")], 0),
            Instant::now() + Duration::from_secs(10),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e,
        RemoteError::KeyRejected {
            remote: "remote-test".into(),
            status: 401
        }
    );
    assert_eq!((up.hits(), e.http_status()), (1, 502));
    assert!(e.to_string().contains("this server's API key"), "{e}");
    let st = scorer.status();
    let failure = st.last_failure.as_ref().expect("the failure is recorded");
    assert_eq!(failure.code, "upstream_auth_failed");
    assert!(st.last_success.is_none());
    assert_eq!(st.in_flight, 0);
    let shown = format!("{st:?} {} {scorer:?}", serde_json::to_string(&st).unwrap());
    assert!(!shown.contains(KEY), "{shown}");
}

#[tokio::test]
async fn other_client_errors_are_400_with_the_upstreams_words() {
    let up = Upstream::start(
        Duration::ZERO,
        script(|_, _, _| {
            let mut b = fireworks_error("logprobs must be at most 5");
            b["error"]["param"] = json!("logprobs");
            status(400, &[], b)
        }),
    )
    .await;
    let e = score_hello(
        settings(named("fireworks"), &up.base),
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    match &e {
        RemoteError::InvalidRequest { field, message } => {
            assert_eq!(field, "logprobs");
            assert!(message.contains("logprobs must be at most 5"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!((up.hits(), e.http_status()), (1, 400));
}

#[tokio::test]
async fn items_run_concurrently_up_to_the_limit_and_inputs_are_checked_first() {
    let up = Upstream::start(Duration::from_millis(200), script(|_, _, _| hello())).await;
    let mut s = settings(named("fireworks"), &up.base);
    s.max_concurrency = 2;
    let scorer = RemoteScorer::new(s).unwrap();
    let far = Instant::now() + Duration::from_secs(20);
    let items = (0..5).map(|_| text_item("Hello", " world")).collect();
    let r = scorer.score(&request(items, 0), far).await.unwrap();
    assert_eq!(r.items.len(), 5);
    let peak = up.peak.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&peak),
        "{peak} calls in flight with max_concurrency 2"
    );

    let bad = request(
        vec![
            text_item("Hello", " world"),
            ItemInput {
                prompt: PromptInput::TokenIds(vec![1]),
                response: ResponseInput::Text("x".into()),
            },
        ],
        0,
    );
    let hits = up.hits();
    let e = scorer.score(&bad, far).await.unwrap_err();
    assert_eq!(e.param().as_deref(), Some("items[1].prompt_token_ids"));
    assert_eq!(
        up.hits(),
        hits,
        "nothing is sent for a request that cannot be scored"
    );
}

#[tokio::test]
async fn one_call_per_prompt_with_its_affinity_key_and_answers_in_request_order() {
    /// (affinity header, the prompts of the items) of each call the upstream got.
    type Calls = Vec<(String, Vec<String>)>;
    let seen: Arc<std::sync::Mutex<Calls>> = Arc::default();
    let log = seen.clone();
    // A native upstream that scores each item as minus its response's length, and notes what it got.
    let up = Upstream::start(
        Duration::from_millis(50),
        script(move |_, body, headers| {
            let items = body["items"].as_array().unwrap();
            let key = headers
                .get("x-llama-scorer-affinity")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let prompts = items
                .iter()
                .map(|i| i["prompt"].as_str().unwrap().to_string())
                .collect();
            log.lock().unwrap().push((key, prompts));
            let data: Vec<Value> = items
                .iter()
                .enumerate()
                .map(|(k, i)| {
                    let x = -(i["response"].as_str().unwrap().len() as f64);
                    json!({"index": k, "object": "logprobs", "logprob": x, "sampling_logprob": x,
                           "temperature": 1.0, "prompt_tokens": 1, "response_tokens": 1,
                           "scored_tokens": 1, "cached": false, "logprobs": {"content": []}})
                })
                .collect();
            axum::Json(json!({"object": "list", "data": data})).into_response()
        }),
    )
    .await;
    let scorer = RemoteScorer::new(settings(named("llama_scorer"), &up.base)).unwrap();
    let items = vec![
        text_item("A", "x"),
        text_item("B", "yy"),
        text_item("A", "zzz"),
    ];
    let far = Instant::now() + Duration::from_secs(20);
    let r = scorer.score(&request(items, 0), far).await.unwrap();
    let got: Vec<f64> = r.items.iter().map(|i| i.logprob).collect();
    assert_eq!(got, [-1.0, -2.0, -3.0], "answers back in request order");
    let mut calls = seen.lock().unwrap().clone();
    calls.sort();
    let model = "accounts/fireworks/models/test";
    let mut want = vec![
        (
            affinity_key(model, "A"),
            vec!["A".to_string(), "A".to_string()],
        ),
        (affinity_key(model, "B"), vec!["B".to_string()]),
    ];
    want.sort();
    assert_eq!(calls, want);
}

// --- this project's own server as the upstream -------------------------------------------------------

/// `serve --model smol` as a separate process.
fn smol_upstream() -> Running {
    let model = smol_path();
    serve_with(
        &[
            "--alias".as_ref(),
            "smol".as_ref(),
            "--model".as_ref(),
            model.as_os_str(),
        ],
        None,
    )
}

fn real(provider: Provider, base_url: String) -> RemoteScorer {
    let mut s = RemoteSettings::new("remote-smol", provider, "smol");
    s.base_url = Some(base_url);
    s.timeout = Duration::from_secs(120);
    RemoteScorer::new(s).unwrap()
}

fn block<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(300)
}

#[test]
fn the_real_upstream_through_all_three_providers() {
    let up = smol_upstream();

    // llama_scorer: the native answer, bit for bit.
    let native = real(named("llama_scorer"), up.base.clone());
    let items = vec![
        text_item("The capital of France is", " Paris."),
        ItemInput {
            prompt: PromptInput::Messages(vec![llama_scorer::engine::ChatMessage {
                role: "user".into(),
                content: "Say hi.".into(),
                name: None,
            }]),
            response: ResponseInput::Text("Hi!".into()),
        },
    ];
    let mut req = request(items, 3);
    req.options.temperature = 0.7;
    req.options.score_end_of_turn = true;
    let got = block(native.score(&req, far())).unwrap();
    let (code, own) = post_to(
        &up.base,
        "/v1/logprobs",
        &json!({"model": "smol", "top_logprobs": 3, "temperature": 0.7, "score_end_of_turn": true,
            "items": [{"prompt": "The capital of France is", "response": " Paris."},
                      {"messages": [{"role": "user", "content": "Say hi."}], "response": "Hi!"}]}),
    );
    assert_eq!(code, 200, "{own}");
    for (i, item) in got.items.iter().enumerate() {
        let theirs = &own["data"][i];
        assert_eq!(
            item.logprob.to_bits(),
            theirs["logprob"].as_f64().unwrap().to_bits()
        );
        assert_eq!(
            item.sampling_logprob.unwrap().to_bits(),
            theirs["sampling_logprob"].as_f64().unwrap().to_bits()
        );
        assert_eq!(
            serde_json::to_value(&item.tokens).unwrap(),
            theirs["logprobs"]["content"]
        );
        assert_eq!(item.scored_tokens, item.response_tokens + 1);
    }
    assert!(native.status().last_success.is_some());

    // A remote model the upstream does not serve: 502 with the upstream's own message, on every provider.
    for (provider, root) in [
        (named("llama_scorer"), ""),
        (named("fireworks"), "/inference/v1"),
        (named("openai"), "/v1"),
    ] {
        let mut s = RemoteSettings::new("remote-nope", provider, "nope");
        s.base_url = Some(format!("{}{root}", up.base));
        let e = block(
            RemoteScorer::new(s)
                .unwrap()
                .score(&request(vec![text_item("a", "b")], 0), far()),
        )
        .unwrap_err();
        match &e {
            RemoteError::UnknownModel { model, message, .. } => {
                assert_eq!(model, "nope");
                assert!(
                    message.contains("model `nope` is not served here"),
                    "{message}"
                );
            }
            other => panic!("{provider}: {other:?}"),
        }
        assert_eq!(e.http_status(), 502);
    }

    // fireworks (/inference/v1) and openai (/v1): the echo's own numbers, exactly.
    for (provider, root) in [
        (named("fireworks"), "/inference/v1"),
        (named("openai"), "/v1"),
    ] {
        let remote = real(provider, format!("{}{root}", up.base));
        for (prompt, response) in [
            ("The capital of France is", " Paris."),
            ("Hello wor東", "ld"),
            ("Hello wor", "東ld"),
        ] {
            let full = format!("{prompt}{response}");
            let got = block(remote.score(&request(vec![text_item(prompt, response)], 2), far()))
                .unwrap_or_else(|e| panic!("{provider} {full:?}: {e}"));
            let (code, own) = post_to(
                &up.base,
                &format!("{root}/completions"),
                &json!({"model": "smol", "prompt": full, "echo": true, "max_tokens": 0, "logprobs": 2}),
            );
            assert_eq!(code, 200, "{own}");
            let lp = &own["choices"][0]["logprobs"];
            let all = lp["token_logprobs"].as_array().unwrap();
            let item = &got.items[0];
            let first = all.len() - item.response_tokens;
            assert_eq!(first, item.prompt_tokens);
            let mut sum = 0.0f64;
            for (k, t) in item.tokens.iter().enumerate() {
                let theirs = all[first + k].as_f64().unwrap();
                assert_eq!(
                    t.logprob.unwrap().to_bits(),
                    theirs.to_bits(),
                    "{full:?} token {k}"
                );
                assert_eq!(t.token_id, lp["token_ids"][first + k].as_i64());
                sum += theirs;
            }
            assert_eq!(item.logprob.to_bits(), sum.to_bits(), "{provider} {full:?}");
            assert_eq!(item.sampling_logprob, None);
            let spelled: String = item.tokens.iter().map(|t| t.token.as_str()).collect();
            if !spelled.contains('\u{FFFD}') {
                assert_eq!(spelled, response);
            }
        }
        // A token across the boundary: an error naming it, never the number.
        let e = block(remote.score(&request(vec![text_item("Hello wor", "ld")], 0), far()))
            .unwrap_err();
        match &e {
            RemoteError::TokenBoundary {
                token,
                start,
                end,
                boundary,
                ..
            } => {
                assert_eq!(
                    (token.as_str(), *start, *end, *boundary),
                    (" world", 5, 11, 9)
                );
            }
            other => panic!("{provider}: {other:?}"),
        }
    }

    // Why: the plain echo recipe (echo(prompt + response) − echo(prompt)) gives a *positive* number here.
    let total = |text: &str| -> f64 {
        let (_, v) = post_to(
            &up.base,
            "/v1/completions",
            &json!({"model": "smol", "prompt": text, "echo": true, "max_tokens": 0, "logprobs": 0}),
        );
        v["choices"][0]["logprobs"]["token_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .sum()
    };
    assert!(total("Hello world") - total("Hello wor") > 0.0);
}

/// Manual check of HTTPS with the host's CA store (needs index.crates.io, through whatever CA the host trusts): `--ignored https`.
#[tokio::test]
#[ignore]
async fn https_with_platform_roots() {
    let mut s = RemoteSettings::new("tls", named("openai"), "m");
    s.base_url = Some("https://index.crates.io/v1".into());
    s.max_retries = 0;
    let e = RemoteScorer::new(s)
        .unwrap()
        .score(
            &request(vec![text_item("a", "b")], 0),
            Instant::now() + Duration::from_secs(20),
        )
        .await
        .unwrap_err();
    assert!(!matches!(e, RemoteError::Unreachable { .. }), "{e}");
    eprintln!("{e}");
}
