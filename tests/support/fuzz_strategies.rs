//! Generators of hostile user input for the property tests of the parsers: text that looks
//! like Jinja, control-token strings, NUL and other control characters, bidi and BOM marks, multi-byte
//! characters, and now and then very long strings. Test-only: included with `#[path]` by the unit tests of
//! the crates that parse user input and by the integration tests, each using some of it.
#![allow(dead_code)]

use proptest::prelude::*;
use serde_json::{Value, json};

/// Pieces that parsers, templates and tokenizers might treat specially.
const FRAGMENTS: &[&str] = &[
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    "{{ messages }}",
    "{{ raise_exception('boom') }}",
    "{% for m in messages %}{{ m }}{% endfor %}",
    "{% set x = 10 ** 9 %}",
    "' + message['role'] + '",
    "\0",
    "\u{1}",
    "\u{1c}",
    "\u{1f}",
    "\u{7f}",
    "\u{85}",
    "\u{a0}",
    "\u{2028}",
    "\u{3000}",
    "\u{202e}",
    "\u{feff}",
    "\u{fffd}",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<bos>",
    "<s>",
    "é",
    "東京",
    "😀",
    "\\",
    "\"",
    "'",
    "system",
    "user",
    "assistant",
    "a",
    "0",
];

/// Arbitrary text, weighted towards the fragments above; one case in about forty is 10–100 KB long.
pub fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(prop::sample::select(FRAGMENTS), 0..12).prop_map(|v| v.concat()),
        4 => any::<String>(),
        1 => (prop::sample::select(FRAGMENTS), 10_000usize..100_000)
            .prop_map(|(f, len)| f.repeat(len / f.len().max(1) + 1)),
    ]
}

/// `[[…[1]…]]`, `depth` lists deep (serde_json refuses to parse past 128).
pub fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |v, _| json!([v]))
}

/// JSON values of every type and extreme: integers at the edges of i32, i64, u32 and u64, SmolLM2's
/// vocabulary edge (49,152), floats tiny and huge, lists and objects shaped like this API's fields (token
/// ids, messages — also as a list —, stream options, logit biases), nesting within and past serde_json's
/// limit, hostile text.
pub fn hostile_json() -> impl Strategy<Value = Value> {
    let fixed = prop::sample::select(vec![
        json!(null),
        json!(true),
        json!(false),
        json!(0),
        json!(1),
        json!(-1),
        json!(2),
        json!(5),
        json!(16),
        json!(17),
        json!(21),
        json!(i64::from(i32::MAX) + 1),
        json!(u32::MAX),
        json!(u64::from(u32::MAX) + 1),
        json!(i64::MIN),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(49_151),
        json!(49_152),
        json!(-0.0),
        json!(0.5),
        json!(-0.5),
        json!(1e-300),
        json!(1e300),
        json!(-1e308),
        json!(""),
        json!("1"),
        json!("NaN"),
        json!([]),
        json!([[]]),
        json!([1]),
        json!([1, 2]),
        json!([-1]),
        json!([49_152]),
        json!([i64::MIN, i64::MAX]),
        json!([0.5]),
        json!(["a"]),
        json!(["a", 1]),
        json!([true]),
        json!({}),
        json!({"x": 1}),
        json!({"role": "user", "content": "x"}),
        json!([{"role": "user", "content": "hi"}]),
        json!([{"role": "user", "content": "hi", "name": null}]),
        json!([{"role": "user"}]),
        json!([["user", "hi"]]),
        json!({"include_usage": true}),
        json!({"include_usage": 1}),
        json!({"include_usage": null}),
        json!({"5": 1.5}),
        json!({"5": "a"}),
        json!({"-5": 1}),
        json!({"49152": 1}),
        json!({"3": 1e300}),
        nested(40),
        nested(130),
    ]);
    prop_oneof![
        8 => fixed,
        2 => hostile_text().prop_map(Value::String),
        1 => any::<f64>().prop_filter("JSON numbers", |f| f.is_finite()).prop_map(Value::from),
        1 => prop::collection::vec(any::<i64>(), 0..4).prop_map(Value::from),
    ]
}
