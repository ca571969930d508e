//! What evaluation harnesses (lm-eval's API backends) rely on, on the real models: an echo with generation
//! ends with what was generated (end-of-turn included), `model` may be left out on a one-policy server,
//! text offsets of tokens that start inside a character, and the tokenizer endpoints.

use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::common::*;

/// A chat prompt after which SmolLM2's greedy next token is its end of turn.
const ENDS_TURN: &str =
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! How can I help you today?";

fn ok_at(base: &str, path: &str, body: &Value) -> Value {
    let (s, v) = post_to(base, path, body);
    assert_eq!(s, 200, "{body} → {v:#}");
    v
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_i64().unwrap())
        .collect()
}

fn tokenize(base: &str, body: Value) -> Vec<i64> {
    ids(&ok_at(base, "/tokenize", &body)["tokens"])
}

#[test]
fn echo_with_generation_lists_the_end_of_turn_token_it_stopped_on() {
    let base = server();
    let v = ok_at(
        base,
        "/v1/completions",
        &json!({"model": SMOL, "prompt": ENDS_TURN, "max_tokens": 1, "echo": true, "logprobs": 10, "temperature": 0}),
    );
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 1);
    let lp = &c["logprobs"];
    let prompt_ids = tokenize(base, json!({"model": SMOL, "prompt": ENDS_TURN}));
    let eot = tokenize(
        base,
        json!({"model": SMOL, "prompt": "<|im_end|>", "add_special_tokens": false}),
    );
    let listed = ids(&lp["token_ids"]);
    // Every prompt token, then the generated end of turn: the client's "drop the last entry" drops it.
    assert_eq!(listed.len(), prompt_ids.len() + 1);
    assert_eq!(&listed[..prompt_ids.len()], &prompt_ids[..]);
    assert_eq!(listed.last(), eot.first());
    assert_eq!(strings(&lp["tokens"]).last().unwrap(), "<|im_end|>");
    // Its logprob is the native API's for that token after the prompt; the text does not contain it.
    let native =
        item(&json!({"model": SMOL, "prompt_token_ids": prompt_ids, "response_token_ids": eot}));
    assert_eq!(
        lp["token_logprobs"].as_array().unwrap().last().unwrap(),
        &native["logprob"]
    );
    assert_eq!(c["text"], ENDS_TURN);
    let offsets = lp["text_offset"].as_array().unwrap();
    assert_eq!(offsets.last().unwrap(), &json!(ENDS_TURN.chars().count()));

    // Streamed: the same tokens over the deltas, the end of turn in the last one.
    let (_, body) = post_stream(
        base,
        &json!({"model": SMOL, "prompt": ENDS_TURN, "max_tokens": 1, "echo": true, "logprobs": 1,
                "temperature": 0, "stream": true}),
    );
    let streamed: Vec<i64> = body
        .iter()
        .filter(|chunk| !chunk["choices"][0]["logprobs"].is_null())
        .flat_map(|chunk| ids(&chunk["choices"][0]["logprobs"]["token_ids"]))
        .collect();
    assert_eq!(streamed, listed);

    // Chat's content[] describes the message only: no end-of-turn entry, but usage counts it.
    let v = ok_at(
        base,
        "/v1/chat/completions",
        &json!({"model": SMOL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 64,
                "temperature": 0, "logprobs": true}),
    );
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "stop");
    let content = c["logprobs"]["content"].as_array().unwrap();
    assert!(content.iter().all(|e| e["token"] != "<|im_end|>"), "{c}");
    assert_eq!(
        v["usage"]["completion_tokens"].as_u64().unwrap() as usize,
        content.len() + 1
    );
}

/// Posts a streamed completion and returns the status and the parsed `data:` chunks before `[DONE]`.
fn post_stream(base: &str, body: &Value) -> (u16, Vec<Value>) {
    let r = client()
        .post(format!("{base}/v1/completions"))
        .json(body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    let chunks = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    (status, chunks)
}

/// A server with one policy, as users start it for a harness.
fn one_policy_server() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| spawn_server(base_config(vec![policy(SMOL, smol_path())])))
}

#[test]
fn model_may_be_left_out_while_one_policy_is_served() {
    let one = one_policy_server();
    let body = json!({"prompt": "The capital of France is", "max_tokens": 1, "echo": true, "logprobs": 10,
                      "temperature": 0});
    let v = ok_at(one, "/v1/completions", &body);
    assert_eq!(v["model"], SMOL);
    let mut named = body.clone();
    named["model"] = json!(SMOL);
    let w = ok_at(one, "/v1/completions", &named);
    assert_eq!(v["choices"][0]["logprobs"], w["choices"][0]["logprobs"]);
    assert_eq!(
        ok_at(
            one,
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
        )["model"],
        SMOL
    );
    assert_eq!(tokenize(one, json!({"content": "Hello"})).len(), 1);
    // Several policies: the name is needed, and the error says which exist.
    let (s, e) = post_to(server(), "/v1/completions", &body);
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["param"], "model");
    assert!(
        e["error"]["message"].as_str().unwrap().contains(GEMMA),
        "{e}"
    );
}

/// The character offset of the character holding byte `at` of `text`.
fn char_offset(text: &[u8], at: usize) -> usize {
    let valid = match std::str::from_utf8(&text[..at]) {
        Ok(s) => s.len(),
        Err(e) => e.valid_up_to(),
    };
    std::str::from_utf8(&text[..valid]).unwrap().chars().count()
}

#[test]
fn a_token_starting_inside_a_character_has_the_offset_of_that_character() {
    let text = "Smile 😀🤔 東京は日本の首都です。 🇫🇷 𓀀𒀀 done";
    for model in [SMOL, GEMMA] {
        let echo = |logprobs: Value| {
            ok_at(
                server(),
                "/v1/completions",
                &json!({"model": model, "prompt": text, "max_tokens": 0, "echo": true, "logprobs": logprobs}),
            )["choices"][0]["logprobs"]
                .clone()
        };
        let content = echo(json!(true));
        let entries = content["content"].as_array().unwrap();
        let joined: Vec<u8> = entries.iter().flat_map(bytes_of).collect();
        let mut at = 0;
        let mut inside = 0;
        let mut offsets = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let piece = bytes_of(e);
            assert_eq!(
                e["text_offset"].as_u64().unwrap() as usize,
                char_offset(&joined, at),
                "{model} token {i}"
            );
            offsets.push(e["text_offset"].clone());
            inside += usize::from(piece.first().is_some_and(|b| b & 0xC0 == 0x80));
            at += piece.len();
        }
        assert!(inside > 0, "{model}: no token starts inside a character");
        // The legacy object gives the same offsets.
        assert_eq!(echo(json!(1))["text_offset"].as_array().unwrap(), &offsets);
    }
}

#[test]
fn the_tokenizer_is_served_as_vllm_and_llama_cpp_clients_look_for_it() {
    let base = server();
    let text = "The capital of France is Paris.<|im_end|>";
    let echo = ok_at(
        base,
        "/v1/completions",
        &json!({"model": SMOL, "prompt": text, "max_tokens": 0, "echo": true, "logprobs": 0}),
    );
    let scored = ids(&echo["choices"][0]["logprobs"]["token_ids"]);
    // vLLM's spelling (add_special_tokens defaults to true) and llama.cpp's give the prompt's tokens.
    let vllm = ok_at(base, "/tokenize", &json!({"model": SMOL, "prompt": text}));
    assert_eq!(ids(&vllm["tokens"]), scored);
    assert_eq!(vllm["count"], json!(scored.len()));
    assert_eq!(
        tokenize(
            base,
            json!({"model": SMOL, "content": text, "add_special": true})
        ),
        scored
    );
    // Gemma adds BOS only when asked.
    let with = tokenize(
        base,
        json!({"model": GEMMA, "prompt": "Hi", "add_special_tokens": true}),
    );
    let without = tokenize(base, json!({"model": GEMMA, "content": "Hi"}));
    assert_eq!(&with[1..], &without[..]);
    // Detokenize gives the text back under both names.
    let d = ok_at(
        base,
        "/detokenize",
        &json!({"model": SMOL, "tokens": scored}),
    );
    assert_eq!(d["prompt"], text);
    assert_eq!(d["content"], text);
    // tokenizer_info: lm-eval encodes eos_token to find the end-of-text id.
    let info = client()
        .get(format!("{base}/tokenizer_info?model={SMOL}"))
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    assert_eq!(info["eos_token"], "<|im_end|>");
    assert_eq!(info["add_bos_token"], false);
    assert!(info["chat_template"].as_str().unwrap().contains("im_start"));
    let gemma = client()
        .get(format!("{base}/tokenizer_info?model={GEMMA}"))
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    assert_eq!(gemma["add_bos_token"], true);
    assert_eq!(
        tokenize(
            base,
            json!({"model": GEMMA, "prompt": gemma["bos_token"], "add_special_tokens": false})
        ),
        with[..1]
    );
    // Bad input: a clear 400 naming the field.
    for (body, param) in [
        (
            json!({"model": SMOL, "prompt": "a", "content": "b"}),
            "content",
        ),
        (json!({"model": SMOL}), "prompt"),
        (json!({"model": SMOL, "prompt": 3}), "prompt"),
        (json!({"model": SMOL, "prompt": "a", "extra": 1}), "extra"),
    ] {
        let (s, e) = post_to(base, "/tokenize", &body);
        assert_eq!(s, 400, "{body} → {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(param),
            "{body} → {e}"
        );
    }
    let (s, e) = post_to(
        base,
        "/detokenize",
        &json!({"model": SMOL, "tokens": [1, 99999999]}),
    );
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["param"], "tokens[1]");
    let (s, _) = post_to(base, "/tokenize", &json!({"model": "nope", "prompt": "a"}));
    assert_eq!(s, 404);
}

#[test]
fn llama_cpp_clients_force_a_token_and_read_its_unbiased_logprob() {
    // lm-eval's rewritten gguf backend: token-id prompt, logit_bias pairs, content[0] with `id`.
    let base = server();
    let prompt = tokenize(
        base,
        json!({"model": SMOL, "prompt": "The capital of France is"}),
    );
    let target = tokenize(
        base,
        json!({"model": SMOL, "prompt": " Berlin", "add_special_tokens": false}),
    )[0];
    let v = ok_at(
        base,
        "/v1/completions",
        &json!({"model": SMOL, "prompt": prompt, "temperature": 0, "max_tokens": 1, "logprobs": 2,
                "logit_bias": [[target, 100]], "id_slot": 0}),
    );
    let entry = &v["choices"][0]["logprobs"]["content"][0];
    assert_eq!(entry["id"], json!(target));
    let native =
        item(&json!({"model": SMOL, "prompt_token_ids": prompt, "response_token_ids": [target]}));
    assert_eq!(entry["logprob"], native["logprob"]);
    assert_eq!(
        v["choices"][0]["logprobs"]["token_logprobs"][0],
        native["logprob"]
    );
    // Its slot pinning is accepted (no effect: the numbers are the same); a slot below -1 is refused.
    let (s, e) = post_to(
        base,
        "/v1/completions",
        &json!({"model": SMOL, "prompt": "x", "max_tokens": 1, "id_slot": -2}),
    );
    assert_eq!((s, &e["error"]["param"]), (400, &json!("id_slot")), "{e}");
    // It sizes its thread pool from /props' total_slots: the model's inference threads.
    let props = client()
        .get(format!("{base}/props?model={SMOL}"))
        .send()
        .unwrap();
    assert_eq!(props.status().as_u16(), 200);
    let props: Value = props.json().unwrap();
    let info: Value = client()
        .get(format!("{base}/tokenizer_info?model={SMOL}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    // The shared server runs the default one inference thread per model.
    assert_eq!(props["total_slots"], 1, "{props}");
    assert_eq!(
        props["default_generation_settings"]["n_ctx"],
        info["model_max_length"]
    );
    assert_eq!(props["eos_token"], info["eos_token"]);
    assert_eq!(props["model_alias"], SMOL);
    // Bad pairs name their index.
    let (s, e) = post_to(
        base,
        "/v1/completions",
        &json!({"model": SMOL, "prompt": "x", "max_tokens": 1, "logit_bias": [[1, 5], [99999999, 1]]}),
    );
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["param"], "logit_bias[1]");
}
