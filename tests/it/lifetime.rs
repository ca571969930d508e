//! The engine's lifetime follows ownership: its guard stops and joins the inference threads when dropped,
//! whoever still holds a policy, and a policy used after that is refused rather than left waiting.

use llama_scorer::engine::{
    CacheSettings, Engine, EngineSettings, ItemInput, PromptInput, ResponseInput, ScoreError,
    ScoreOptions,
};

use crate::common::{policy, smol_path};

#[test]
fn dropping_the_guard_stops_the_engine_under_a_policy_still_held() {
    let settings = EngineSettings {
        threads: 2,
        parallel: 2,
        queue_size: 8,
        decode_chunk: 512,
        prefix_cache_bytes: 0,
        mmap: true,
        cache: CacheSettings {
            max_bytes: 0,
            ttl: None,
        },
        policies: vec![policy("p", smol_path())],
    };
    let guard = Engine::start(&settings).expect("the engine starts");
    let held = guard.policies()[0].clone();
    let options = ScoreOptions {
        top_logprobs: 0,
        echo: false,
        score_end_of_turn: false,
        temperature: 1.0,
    };
    let item = held
        .prepare(
            &ItemInput {
                prompt: PromptInput::Text("Hello".into()),
                response: ResponseInput::Text(" world".into()),
            },
            &options,
        )
        .map(std::sync::Arc::new)
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(
        runtime
            .block_on(held.score(vec![item.clone()], &options))
            .is_ok()
    );
    // Returns once every inference thread has been joined.
    drop(guard);
    match runtime.block_on(held.score(vec![item], &options)) {
        Err(ScoreError::Unavailable(_)) => {}
        other => panic!("a stopped engine answered {other:?}"),
    }
}
