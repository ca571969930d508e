//! Generators of hostile user input for the property tests of the parsers (issue 14.5): text that looks
//! like Jinja, control-token strings, NUL and other control characters, bidi and BOM marks, multi-byte
//! characters, and now and then very long strings. Test-only.

use proptest::prelude::*;

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
