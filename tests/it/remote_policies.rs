//! Remote policies end to end: a front llama-scorer whose configuration mixes a local policy with
//! remote ones served by a second llama-scorer process (the upstream, through all three providers). The
//! front's answers are checked against the upstream's own answers and against the front's local policy on
//! the same model file (an independent computation of the same numbers in another process).

use std::path::Path;

use std::process::Stdio;

use serde_json::{Value, json};

use crate::common::{
    Running, binary, client, free_port, get_json, model_ids, post_to, ready, score_run, serve_on,
    serve_with, smol_path, write_config,
};

/// The key the front sends upstream; it must never show in what the front says.
const FRONT_KEY: &str = "sk-front-secret-4711";

/// A chat template for the `openai` remote (a completions API renders no template itself).
const TEMPLATE: &str = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}\
                        {% if add_generation_prompt %}<|assistant|>{% endif %}";

fn upstream(port: u16) -> Running {
    let model = smol_path();
    serve_on(
        port,
        &[
            "--alias".as_ref(),
            "smol".as_ref(),
            "--model".as_ref(),
            model.as_os_str(),
        ],
        &[],
        None,
        Stdio::null(),
    )
}

/// The seed's mixed-provider shape: a local policy and three remote ones on the upstream's `smol`.
fn mixed_config(dir: &Path, up: &str) -> std::path::PathBuf {
    let yaml = format!(
        "policies:\n\
         \x20 local: {{provider: llama_cpp, model: {model}, temperature: 0.5}}\n\
         \x20 nat: {{provider: llama_scorer, model: smol, base_url: '{up}', temperature: 0.5}}\n\
         \x20 fw: {{provider: fireworks, model: smol, base_url: '{up}/inference/v1', api_key_env: FRONT_TEST_KEY}}\n\
         \x20 oa: {{provider: openai, model: smol, base_url: '{up}/v1', api_key_env: '', chat_template: {template:?}}}\n",
        model = smol_path().display(),
        template = TEMPLATE,
    );
    write_config(dir, &yaml)
}

fn front(config: &Path) -> Running {
    serve_on(
        free_port(),
        &["--config".as_ref(), config.as_os_str()],
        &[("FRONT_TEST_KEY", FRONT_KEY)],
        None,
        Stdio::null(),
    )
}

/// `data` of a `/v1/logprobs` answer without the fields that say where an answer came from.
fn numbers(answer: &Value) -> Value {
    let mut data = answer["data"].clone();
    for item in data.as_array_mut().unwrap() {
        item.as_object_mut().unwrap().remove("cached");
    }
    data
}

fn bits(v: &Value) -> u64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("not a number: {v}"))
        .to_bits()
}

#[test]
fn remote_policies_answer_as_their_upstreams_do() {
    let up = upstream(free_port());
    let dir = tempfile::tempdir().unwrap();
    let front = front(&mixed_config(dir.path(), &up.base));
    let base = &front.base;

    // Every policy is listed, in the file's order.
    assert_eq!(model_ids(base), ["local", "nat", "fw", "oa"]);

    // llama_scorer: the upstream's own answer, bit for bit, and the front's local policy on the same file
    // gives the same bits in this other process.
    let request = |model: &str| {
        json!({"model": model, "top_logprobs": 2, "echo": true, "score_end_of_turn": true,
               "temperature": 0.7,
               "items": [{"prompt": "The capital of France is", "response": " Paris."},
                         {"messages": [{"role": "user", "content": "Say hi."}], "response": "Hi!"}]})
    };
    let (code, via_front) = post_to(base, "/v1/logprobs", &request("nat"));
    assert_eq!(code, 200, "{via_front}");
    let (code, own) = post_to(&up.base, "/v1/logprobs", &request("smol"));
    assert_eq!(code, 200, "{own}");
    assert_eq!(numbers(&via_front), numbers(&own));
    assert_eq!(via_front["model"], "nat");
    let (code, local) = post_to(base, "/v1/logprobs", &request("local"));
    assert_eq!(code, 200, "{local}");
    assert_eq!(numbers(&local), numbers(&own));
    // Without a request temperature, the remote policy's own (0.5) is sent.
    let (_, default_t) = post_to(
        base,
        "/v1/logprobs",
        &json!({"model": "nat", "prompt": "Hello", "response": " there"}),
    );
    assert_eq!(default_t["data"][0]["temperature"], 0.5);

    // fireworks: the echo recipe's numbers where the boundary is a token edge, equal to the local
    // policy's teacher-forced score; no temperature-adjusted value is made up.
    let one = |model: &str, prompt: &str, response: &str| {
        post_to(
            base,
            "/v1/logprobs",
            &json!({"model": model, "prompt": prompt, "response": response, "top_logprobs": 2}),
        )
    };
    let (code, fw) = one("fw", "The capital of France is", " Paris.");
    assert_eq!(code, 200, "{fw}");
    let (_, loc) = one("local", "The capital of France is", " Paris.");
    let (fw, loc) = (&fw["data"][0], &loc["data"][0]);
    assert_eq!(bits(&fw["logprob"]), bits(&loc["logprob"]), "{fw}\n{loc}");
    assert_eq!(fw["sampling_logprob"], Value::Null);
    assert_eq!(fw["response_tokens"], loc["response_tokens"]);
    let fw_tokens = fw["logprobs"]["content"].as_array().unwrap();
    let loc_tokens = loc["logprobs"]["content"].as_array().unwrap();
    for (a, b) in fw_tokens.iter().zip(loc_tokens) {
        assert_eq!(a["token"], b["token"]);
        assert_eq!(a["token_id"], b["token_id"]);
        assert_eq!(
            a["text_offset"], b["text_offset"],
            "offsets count from the prompt's start"
        );
        assert_eq!(bits(&a["logprob"]), bits(&b["logprob"]));
    }
    assert_eq!(fw["cached"], false);

    // The same request again: the front's remote cache answers, with the same bits.
    let (_, again) = one("fw", "The capital of France is", " Paris.");
    assert_eq!(again["data"][0]["cached"], true);
    assert_eq!(bits(&again["data"][0]["logprob"]), bits(&fw["logprob"]));

    // A token across the boundary is a 422 naming it, never a number.
    let (code, straddle) = one("fw", "Hello wor", "ld");
    assert_eq!(code, 422, "{straddle}");
    assert_eq!(straddle["error"]["code"], "token_boundary");
    assert_eq!(straddle["error"]["param"], "response");
    assert!(
        straddle["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\" world\""),
        "{straddle}"
    );
    // In a batch, the item is named by its place in the request (cached items before it included).
    let (code, batch) = post_to(
        base,
        "/v1/logprobs",
        &json!({"model": "fw", "items": [
            {"prompt": "The capital of France is", "response": " Paris."},
            {"prompt": "Hello wor", "response": "ld"}]}),
    );
    assert_eq!(code, 422, "{batch}");
    assert_eq!(batch["error"]["param"], "items[1].response");

    // Messages need the policy's chat template: refused without one, rendered here with one.
    let chat = |model: &str| {
        post_to(
            base,
            "/v1/logprobs",
            &json!({"model": model, "messages": [{"role": "user", "content": "Say hi."}],
                    "response": " Hi!"}),
        )
    };
    let (code, refused) = chat("fw");
    assert_eq!(code, 400, "{refused}");
    assert_eq!(refused["error"]["param"], "messages");
    let (code, rendered) = chat("oa");
    assert_eq!(code, 200, "{rendered}");
    let (code, as_text) = one("oa", "<|user|>Say hi.\n<|assistant|>", " Hi!");
    assert_eq!(code, 200, "{as_text}");
    assert_eq!(
        bits(&rendered["data"][0]["logprob"]),
        bits(&as_text["data"][0]["logprob"])
    );

    // Options a completions API cannot serve are refused by name.
    let (code, echo) = post_to(
        base,
        "/v1/logprobs",
        &json!({"model": "fw", "prompt": "a", "response": "b", "echo": true}),
    );
    assert_eq!((code, echo["error"]["param"].as_str()), (400, Some("echo")));

    // The compatibility endpoints forward to the upstream and answer under the policy's name.
    let completion = |model: &str| {
        json!({"model": model, "prompt": "The capital of France is Paris.", "echo": true,
               "max_tokens": 0, "logprobs": 2})
    };
    let (code, fwd) = post_to(base, "/inference/v1/completions", &completion("fw"));
    assert_eq!(code, 200, "{fwd}");
    let (_, direct) = post_to(&up.base, "/inference/v1/completions", &completion("smol"));
    assert_eq!(fwd["choices"], direct["choices"]);
    assert_eq!(fwd["model"], "fw");
    let generate = |model: &str| {
        json!({"model": model, "messages": [{"role": "user", "content": "Name a colour."}],
               "max_tokens": 5, "temperature": 0.9, "seed": 11})
    };
    let (code, fwd) = post_to(base, "/v1/chat/completions", &generate("nat"));
    assert_eq!(code, 200, "{fwd}");
    let (_, direct) = post_to(&up.base, "/v1/chat/completions", &generate("smol"));
    assert_eq!(fwd["choices"], direct["choices"]);
    let mut streamed = generate("nat");
    streamed["stream"] = json!(true);
    let (code, refused) = post_to(base, "/v1/chat/completions", &streamed);
    assert_eq!(
        (code, refused["error"]["param"].as_str()),
        (400, Some("stream"))
    );

    // /ready shows each remote's health without its key; /metrics counts the upstream calls.
    let state = ready(base);
    let remotes = state["remotes"].as_array().unwrap();
    let names: Vec<&str> = remotes
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nat", "fw", "oa"]);
    assert!(
        remotes.iter().all(|r| r["last_success"].is_u64()),
        "{state}"
    );
    assert!(
        state["remote_cache"]["hits"].as_u64().unwrap() >= 1,
        "{state}"
    );
    assert!(!state.to_string().contains(FRONT_KEY));
    let metrics = client()
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("llama_scorer_remote_calls_total{remote=\"fw\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains(FRONT_KEY));

    // The tokenizer routes serve a local policy's tokenizer and refuse a remote one's, naming `model`;
    // `/v1/models` gives a context length and fingerprint only where they are known here.
    let (code, tokens) = post_to(
        base,
        "/tokenize",
        &json!({"model": "local", "prompt": "Hi"}),
    );
    assert_eq!(code, 200, "{tokens}");
    for route in ["/tokenize", "/detokenize"] {
        let body = if route == "/tokenize" {
            json!({"model": "fw", "prompt": "Hi"})
        } else {
            json!({"model": "fw", "tokens": [1]})
        };
        let (code, refused) = post_to(base, route, &body);
        assert_eq!(code, 400, "{route}: {refused}");
        assert_eq!(refused["error"]["param"], "model", "{route}: {refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("remote fireworks API"),
            "{route}: {refused}"
        );
    }
    for entry in get_json(base, "/v1/models")["data"].as_array().unwrap() {
        let local = entry["id"] == "local";
        assert_eq!(entry["context_length"].is_u64(), local, "{entry}");
        assert_eq!(entry["system_fingerprint"].is_string(), local, "{entry}");
    }
}

#[test]
fn an_unreachable_upstream_is_a_502_naming_the_policy_and_the_local_ones_still_answer() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "policies:\n\
         \x20 local: {{model: {}}}\n\
         \x20 gone: {{provider: llama_scorer, model: smol, base_url: 'http://127.0.0.1:{port}', max_retries: 1}}\n",
        smol_path().display()
    );
    let config = write_config(dir.path(), &yaml);
    let front = serve_with(&["--config".as_ref(), config.as_os_str()], None);
    let body = |model: &str| json!({"model": model, "prompt": "Hi", "response": " there"});
    let (code, e) = post_to(&front.base, "/v1/logprobs", &body("gone"));
    assert_eq!(code, 502, "{e}");
    assert_eq!(e["error"]["code"], "upstream_unreachable");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("`gone`"),
        "{e}"
    );
    let (code, _) = post_to(&front.base, "/v1/logprobs", &body("local"));
    assert_eq!(code, 200);
    let state = ready(&front.base);
    assert_eq!(state["ready"], true);
    assert_eq!(
        state["remotes"][0]["last_failure"]["code"],
        "upstream_unreachable"
    );
}

#[test]
fn a_missing_key_variable_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "policies:\n  p0: {provider: fireworks, model: accounts/fireworks/models/x, \
         api_key_env: LLAMA_SCORER_TEST_SURELY_UNSET}\n",
    );
    let out = binary()
        .args(["serve", "--port", "0", "--config"])
        .arg(&config)
        .env_remove("LLAMA_SCORER_TEST_SURELY_UNSET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("policies.p0.api_key_env")
            && stderr.contains("LLAMA_SCORER_TEST_SURELY_UNSET"),
        "{stderr}"
    );
}

/// `score` over a local and a remote policy: an upstream that is down stops the run with the local lines
/// written; once it is back, a rerun scores only what is missing, and the remote lines carry the same bits
/// as the local ones (same model file, same temperature, another process).
#[test]
fn score_mixes_local_and_remote_policies_and_resumes_after_an_outage() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "policies:\n\
         \x20 local: {{model: {}, temperature: 0.5}}\n\
         \x20 nat: {{provider: llama_scorer, model: smol, base_url: 'http://127.0.0.1:{port}', \
         temperature: 0.5, max_retries: 0, max_concurrency: 2}}\n",
        smol_path().display()
    );
    let config = write_config(dir.path(), &yaml);
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"id\": \"a\", \"prompt\": \"The capital of France is\", \"response\": \" Paris.\"}\n\
         {\"id\": \"b\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"response\": \"Hello!\"}\n\
         {\"id\": \"c\", \"prompt\": \"1 2 3\", \"response\": \" 4 5\"}\n",
    )
    .unwrap();
    let output = dir.path().join("out.jsonl");
    let score = || score_run(&config, &input, &output, &[]);
    let lines = || -> Vec<Value> {
        std::fs::read_to_string(&output)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };

    let first = score();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(!first.status.success(), "{stderr}");
    assert!(
        stderr.contains("`nat`") && stderr.contains("rerun"),
        "{stderr}"
    );
    let written = lines();
    assert_eq!(written.len(), 3, "{written:?}");
    assert!(
        written
            .iter()
            .all(|l| l["policy"] == "local" && l.get("error").is_none())
    );

    let _up = upstream(port);
    let second = score();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let all = lines();
    assert_eq!(all.len(), 6, "{all:?}");
    for id in ["a", "b", "c"] {
        let of = |policy: &str| {
            all.iter()
                .find(|l| l["id"] == id && l["policy"] == policy)
                .unwrap_or_else(|| panic!("no ({id}, {policy}) line"))
        };
        let (local, remote) = (of("local"), of("nat"));
        assert!(remote.get("error").is_none(), "{remote}");
        assert_eq!(bits(&remote["logprob"]), bits(&local["logprob"]), "{id}");
        assert_eq!(
            bits(&remote["sampling_logprob"]),
            bits(&local["sampling_logprob"]),
            "{id}"
        );
        assert_eq!(remote["response_tokens"], local["response_tokens"]);
    }
}

/// `models` with `base` across local and remote policies: the remote results equal their own single-policy
/// requests, a remote clone of the local base (same file upstream, same temperature) has a log-ratio of
/// exactly 0 — weight 1 across two processes — and a provider with no temperature-adjusted value gives a
/// `null` ratio, never a number made from the T = 1 value.
#[test]
fn several_policies_mix_local_and_remote_with_ratios_against_a_local_base() {
    let up = upstream(free_port());
    let dir = tempfile::tempdir().unwrap();
    let front = front(&mixed_config(dir.path(), &up.base));
    let items = json!([{"prompt": "The capital of France is", "response": " Paris."},
                       {"prompt": "Roses are red,", "response": " violets are blue."}]);
    let (code, multi) = post_to(
        &front.base,
        "/v1/logprobs",
        &json!({"models": ["nat", "fw"], "base": "local", "items": items}),
    );
    assert_eq!(code, 200, "{multi}");
    assert_eq!(multi["models"], json!(["nat", "fw", "local"]));
    let data = multi["data"].as_array().unwrap();
    assert_eq!(data.len(), 6);
    for (j, policy) in ["nat", "fw", "local"].iter().enumerate() {
        let (code, alone) = post_to(
            &front.base,
            "/v1/logprobs",
            &json!({"model": policy, "items": items}),
        );
        assert_eq!(code, 200, "{alone}");
        for item in 0..2 {
            let entry = &data[item * 3 + j];
            assert_eq!(entry["model"], *policy);
            assert_eq!(
                bits(&entry["logprob"]),
                bits(&alone["data"][item]["logprob"])
            );
            assert_eq!(
                entry["sampling_logprob"],
                alone["data"][item]["sampling_logprob"]
            );
        }
    }
    for item in 0..2 {
        let (nat, fw) = (&data[item * 3], &data[item * 3 + 1]);
        assert_eq!(bits(&nat["log_ratio"]), 0.0f64.to_bits(), "{nat}");
        assert_eq!(nat["tokens_aligned"], true);
        assert_eq!(fw["sampling_logprob"], Value::Null);
        assert_eq!(fw["log_ratio"], Value::Null, "{fw}");
    }
}
