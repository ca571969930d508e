//! Prompt affinity: a stable key per (policy, prompt), sent as `X-Llama-Scorer-Affinity` so that a balancer
//! hashing on it (consistently) keeps one prompt's requests — its several responses — on the replica that
//! already holds the prompt's prefix state and cached scores, without parsing bodies.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The header balancers hash on (see deploy/: nginx, HAProxy, Envoy).
pub const AFFINITY_HEADER: &str = "x-llama-scorer-affinity";

/// The key of `prompt` under `policy` (the policy's name where the request goes): the first 16 bytes of
/// SHA-256 over `policy + "\n" + prompt`, in hex. `prompt` is as sent: the text, or the compact JSON of
/// the messages or token ids (Python: `json.dumps(v, separators=(",", ":"), ensure_ascii=False)`).
pub fn affinity_key(policy: &str, prompt: &str) -> String {
    let digest = Sha256::digest(format!("{policy}\n{prompt}").as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The prompt of a native wire item, as the key spells it.
pub(crate) fn prompt_of(item: &Value) -> String {
    match (
        item.get("prompt"),
        item.get("messages"),
        item.get("prompt_token_ids"),
    ) {
        (Some(Value::String(text)), _, _) => text.clone(),
        (_, Some(messages), _) => messages.to_string(),
        (_, _, Some(ids)) => ids.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_documented_recipe() {
        // python3 -c 'import hashlib; print(hashlib.sha256("p0\nThe capital of France is".encode()).hexdigest()[:32])'
        assert_eq!(
            affinity_key("p0", "The capital of France is"),
            "f7a9a133a5f343e096ab097c805c3e5f"
        );
        let messages = serde_json::json!({"messages": [{"role": "user", "content": "Hé"}]});
        // json.dumps([{"role": "user", "content": "Hé"}], separators=(",", ":"), ensure_ascii=False)
        assert_eq!(prompt_of(&messages), r#"[{"role":"user","content":"Hé"}]"#);
    }
}
