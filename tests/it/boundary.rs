//! The prompt/response boundary is exact on both tokenizer families: the response's tokens spell the
//! response byte for byte, and the prompt's tokens are those of the prompt alone.

use serde_json::{Value, json};

use crate::common::*;

const RESPONSES: &[&str] = &[
    "Here is a summary of this week's most recent news.",
    " Paris.",
    "\nA response that starts on a new line.",
    "😀 starts with an emoji",
    "東京は日本の首都です。",
    "<|im_end|> looks like a control token",
    "<end_of_turn> and <bos> look like control tokens too",
    "  two leading spaces",
    "x",
];

const PROMPT: &str = "Summarize the week's news. Be recent.";

fn check_boundary(policy: &str, prompt: &str, response: &str) {
    let r = item(&json!({"model": policy, "prompt": prompt, "response": response}));
    let toks = tokens(&r);
    let n = r["response_tokens"].as_u64().unwrap() as usize;
    assert_eq!(toks.len(), n, "{policy} {response:?}");
    assert!(n > 0);
    let joined: Vec<u8> = toks.iter().flat_map(bytes_of).collect();
    assert_eq!(
        joined,
        response.as_bytes(),
        "{policy}: response tokens do not spell {response:?}"
    );
    // The prompt is tokenized alone: an echo of the prompt with an empty response gives the same
    // number of prompt tokens, and those tokens spell the prompt (after BOS, when the model adds one).
    let alone = item(&json!({"model": policy, "prompt": prompt, "response": "", "echo": true}));
    assert_eq!(
        alone["prompt_tokens"], r["prompt_tokens"],
        "{policy} {response:?}"
    );
    // Offsets: the first response token starts where the prompt's bytes end.
    let prompt_bytes: usize = tokens(&alone).iter().map(|t| bytes_of(t).len()).sum();
    assert_eq!(
        toks[0]["text_offset"].as_u64().unwrap() as usize,
        prompt_bytes
    );
}

#[test]
fn responses_spell_themselves_exactly_on_both_tokenizers() {
    for policy in [SMOL, GEMMA] {
        for response in RESPONSES {
            check_boundary(policy, PROMPT, response);
        }
    }
}

#[test]
fn prompt_ending_in_a_period_and_response_starting_with_here() {
    // BPE would merge ".Here"/". Here" if prompt and response were tokenized together; scored alone, the
    // response's first token is exactly "Here".
    for policy in [SMOL, GEMMA] {
        let r = item(&json!({"model": policy, "prompt": PROMPT, "response": "Here is the news."}));
        let first = &tokens(&r)[0];
        assert_eq!(first["token"], "Here", "{policy}: first token {first}");
    }
}

#[test]
fn control_token_text_in_a_response_is_scored_as_characters() {
    for (policy, control) in [
        (SMOL, "<|im_end|>"),
        (GEMMA, "<end_of_turn>"),
        (GEMMA, "<bos>"),
    ] {
        let response = format!("{control} after");
        let r = item(&json!({"model": policy, "prompt": PROMPT, "response": response}));
        let toks = tokens(&r);
        assert!(
            toks.len() > 2,
            "{policy}: {control} became a single control token"
        );
        assert!(
            toks.iter().all(|t| t["token"] != *control),
            "{policy}: {control} was parsed as a control token"
        );
    }
    // In the prompt, the same text *is* the control token (as HF and llama.cpp's server parse it).
    let r = item(
        &json!({"model": SMOL, "prompt": "<|im_start|>user\nHi<|im_end|>", "response": "x", "echo": true}),
    );
    let toks = tokens(&r);
    assert_eq!(toks[0]["token"], "<|im_start|>");
    assert!(toks.iter().any(|t| t["token"] == "<|im_end|>"));
}

#[test]
fn empty_response_scores_exactly_zero_or_the_end_of_turn_token() {
    for policy in [SMOL, GEMMA] {
        let r = item(&json!({"model": policy, "prompt": PROMPT, "response": ""}));
        assert_eq!(r["response_tokens"], 0);
        assert_eq!(r["scored_tokens"], 0);
        assert_eq!(r["logprob"].as_f64().unwrap().to_bits(), 0f64.to_bits());
        assert!(tokens(&r).is_empty());

        let r = item(
            &json!({"model": policy, "prompt": PROMPT, "response": "", "score_end_of_turn": true}),
        );
        assert_eq!(r["scored_tokens"], 1);
        let toks = tokens(&r);
        assert_eq!(toks.len(), 1);
        let lp = f(&toks[0]["logprob"]);
        assert!(lp < 0.0);
        assert_eq!(f(&r["logprob"]).to_bits(), lp.to_bits());
    }
    // The end-of-turn tokens are the models' own.
    let smol =
        item(&json!({"model": SMOL, "prompt": PROMPT, "response": "", "score_end_of_turn": true}));
    assert_eq!(tokens(&smol)[0]["token"], "<|im_end|>");
    let gemma =
        item(&json!({"model": GEMMA, "prompt": PROMPT, "response": "", "score_end_of_turn": true}));
    assert_eq!(tokens(&gemma)[0]["token"], "<end_of_turn>");
}

#[test]
fn bos_is_added_exactly_when_the_model_says_so_and_only_once() {
    let echo = |policy: &str, prompt: &str| -> Vec<Value> {
        tokens(&item(
            &json!({"model": policy, "prompt": prompt, "response": "", "echo": true}),
        ))
    };
    // Gemma adds BOS; SmolLM2 does not.
    let g = echo(GEMMA, "Hello there");
    assert_eq!(g[0]["token"], "<bos>");
    assert_ne!(g[1]["token"], "<bos>");
    let s = echo(SMOL, "Hello there");
    assert_eq!(s[0]["token"], "Hello");
    // A prompt that already starts with BOS (as chat templates write it) gets no second one.
    let g2 = echo(GEMMA, "<bos>Hello there");
    assert_eq!(g2.len(), g.len());
    // The chat template renders `bos_token` itself: still exactly one BOS.
    let r = item(
        &json!({"model": GEMMA_CHAT, "messages": [{"role": "user", "content": "Hi"}], "response": "Hello", "echo": true}),
    );
    let toks = tokens(&r);
    assert_eq!(toks[0]["token"], "<bos>");
    assert_eq!(toks.iter().filter(|t| t["token"] == "<bos>").count(), 1);
    assert_eq!(toks[1]["token"], "<start_of_turn>");
}

#[test]
fn messages_render_through_the_models_template_with_the_policy_system_prompt() {
    let echo_text = |body: Value| -> String {
        let r = item(&body);
        let n = r["prompt_tokens"].as_u64().unwrap() as usize;
        let bytes: Vec<u8> = tokens(&r)[..n].iter().flat_map(bytes_of).collect();
        String::from_utf8(bytes).unwrap()
    };
    let msgs = json!([{"role": "user", "content": "What is 2+2?"}]);
    let text = echo_text(json!({"model": SMOL, "messages": msgs, "response": "4", "echo": true}));
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    let text =
        echo_text(json!({"model": SMOL_SYSTEM, "messages": msgs, "response": "4", "echo": true}));
    assert!(
        text.starts_with(
            "<|im_start|>system\nYou are an unhelpful assistant.<|im_end|>\n<|im_start|>user\n"
        ),
        "{text}"
    );
    // Messages and the equivalent raw prompt score identically.
    let via_messages = item(&json!({"model": SMOL, "messages": msgs, "response": "4"}));
    let via_prompt = item(
        &json!({"model": SMOL, "prompt": "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", "response": "4"}),
    );
    assert_eq!(via_messages["logprob"], via_prompt["logprob"]);
}

#[test]
fn token_ids_score_like_the_text_they_spell() {
    let text =
        item(&json!({"model": SMOL, "prompt": PROMPT, "response": " The news.", "echo": true}));
    let toks = tokens(&text);
    let p = text["prompt_tokens"].as_u64().unwrap() as usize;
    let ids: Vec<u64> = toks
        .iter()
        .map(|t| t["token_id"].as_u64().unwrap())
        .collect();
    let by_ids = item(
        &json!({"model": SMOL, "prompt_token_ids": ids[..p], "response_token_ids": ids[p..], "echo": true}),
    );
    assert_eq!(by_ids["logprobs"], text["logprobs"]);
    assert_eq!(by_ids["logprob"], text["logprob"]);
}
