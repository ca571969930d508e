//! Chat templates: the GGUF's own Jinja `tokenizer.chat_template`, rendered with Hugging Face semantics.
//!
//! HF renders templates with Jinja2 (`trim_blocks`, `lstrip_blocks`, loop controls), Python string methods,
//! `raise_exception`, and a `tojson` that is Python's `json.dumps(ensure_ascii=False)`. The same is set up here
//! with minijinja, so a prompt rendered by llama-scorer is the prompt HF `apply_chat_template` would give.
//! `strftime_now` is deliberately not provided: templates then fall back to their fixed default date, so
//! the rendered prompt — and every score — does not change from one day to the next.

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind, syntax::SyntaxConfig};
use serde::Serialize;

use super::error::ScoreError;
use super::types::ChatMessage;

/// A compiled chat template with the BOS/EOS strings it is rendered with.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

const NAME: &str = "chat_template";

/// Renders a conversation as a policy's prompt text: the policy's system prompt first (the messages may
/// then not start with one of their own), then the messages, then the generation prompt. Local and remote
/// policies render the same way; `why_none` says why a policy without a template has none.
pub fn render_policy_prompt(
    template: Option<&ChatTemplate>,
    system_prompt: Option<&str>,
    policy: &str,
    why_none: &str,
    messages: &[ChatMessage],
) -> Result<String, ScoreError> {
    let template = template.ok_or_else(|| {
        ScoreError::invalid(
            "messages",
            format!("policy `{policy}` has no chat template ({why_none}); send a `prompt` instead"),
        )
    })?;
    let mut all = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = system_prompt {
        if messages.first().is_some_and(|m| m.role == "system") {
            return Err(ScoreError::invalid(
                "messages[0]",
                format!(
                    "policy `{policy}` defines its own system prompt, so the messages may not start \
                     with a system message"
                ),
            ));
        }
        all.push(ChatMessage {
            role: "system".into(),
            content: system.to_string(),
            name: None,
        });
    }
    all.extend_from_slice(messages);
    template
        .render(&all, true)
        .map_err(|e| ScoreError::invalid("messages", format!("chat template: {e:#}")))
}

impl ChatTemplate {
    /// Compiles `source`; fails on a syntax error (reported at start-up, naming the policy).
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate, Error> {
        let mut env = Environment::new();
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()?,
        );
        env.set_unknown_method_callback(python_methods);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", python_tojson);
        env.add_filter("trim", python_trim);
        env.add_template_owned(NAME, source.to_owned())?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// Renders the conversation with `add_generation_prompt`, as HF `apply_chat_template` does.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, Error> {
        let template = self.env.get_template(NAME)?;
        template.render(minijinja::context! {
            messages => Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        })
    }
}

/// Python's `str.isspace()`: Unicode whitespace as Rust's `char::is_whitespace` has it, plus the ASCII
/// separators U+001C–U+001F, which Rust (and so minijinja) does not count.
fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Jinja2's `trim` is Python's `str.strip(chars)` of the value as text: without `chars`, Python's whitespace.
fn python_trim(value: &Value, chars: Option<&str>) -> String {
    let text = value.to_string();
    let value = value.as_str().unwrap_or(&text);
    match chars {
        Some(chars) => value.trim_matches(|c| chars.contains(c)).to_owned(),
        None => value.trim_matches(python_space).to_owned(),
    }
}

/// Python's string methods (minijinja-contrib's pycompat), with `strip`, `lstrip` and `rstrip` without
/// arguments stripping Python's whitespace (pycompat strips Rust's).
fn python_methods(
    state: &mut minijinja::State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if let (Some(s), []) = (value.as_str(), args) {
        match method {
            "strip" => return Ok(Value::from(s.trim_matches(python_space))),
            "lstrip" => return Ok(Value::from(s.trim_start_matches(python_space))),
            "rstrip" => return Ok(Value::from(s.trim_end_matches(python_space))),
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `tojson` as HF defines it: `json.dumps(x, ensure_ascii=False, indent=indent)`, so `", "` and `": "`
/// separators and no HTML escaping (minijinja's built-in escapes `<`, `>`, `&` and `'`).
fn python_tojson(value: &Value, indent: Option<usize>, _kwargs: Kwargs) -> Result<Value, Error> {
    let json = serde_json::to_value(value).map_err(|e| {
        Error::new(ErrorKind::BadSerialization, "tojson: cannot serialize").with_source(e)
    })?;
    let mut out = Vec::new();
    let result = match indent {
        Some(n) => {
            let pad = vec![b' '; n];
            let fmt = serde_json::ser::PrettyFormatter::with_indent(&pad);
            json.serialize(&mut serde_json::Serializer::with_formatter(&mut out, fmt))
        }
        None => json.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PythonCompactFormatter,
        )),
    };
    result.map_err(|e| {
        Error::new(ErrorKind::BadSerialization, "tojson: cannot serialize").with_source(e)
    })?;
    Ok(Value::from_safe_string(
        String::from_utf8(out).expect("serde_json writes UTF-8"),
    ))
}

/// Python's default `json.dumps` separators: `", "` between items and `": "` after keys.
struct PythonCompactFormatter;

/// `", "` before every item or key but the first, as Python writes them.
fn python_separator<W: ?Sized + std::io::Write>(
    writer: &mut W,
    first: bool,
) -> std::io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}

impl serde_json::ser::Formatter for PythonCompactFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        python_separator(writer, first)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        python_separator(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            name: None,
        }
    }

    /// SmolLM2-135M-Instruct's template, as stored in its GGUF.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_like_hf() {
        let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
        let out = t.render(&[msg("user", "Hi")], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = t
            .render(&[msg("system", "S"), msg("user", "Hi")], false)
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn hf_whitespace_rules_python_methods_and_exceptions() {
        // trim_blocks + lstrip_blocks, `.strip()`, `raise_exception`, bos_token.
        let src = "{{ bos_token }}\n  {% for m in messages %}\n{% if m.role == 'tool' %}{{ raise_exception('no tools') }}{% endif %}\n[{{ m.content.strip() }}]\n  {% endfor %}\n";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        assert_eq!(
            t.render(&[msg("user", "  a  ")], true).unwrap(),
            "<s>\n[a]\n"
        );
        let e = t.render(&[msg("tool", "x")], true).unwrap_err();
        assert!(e.to_string().contains("no tools"), "{e}");
    }

    #[test]
    fn tojson_is_pythons_json_dumps() {
        let t = ChatTemplate::new("{{ messages[0] | tojson }}", "", "").unwrap();
        let out = t.render(&[msg("user", "<é & 'x'>")], false).unwrap();
        assert_eq!(out, r#"{"role": "user", "content": "<é & 'x'>"}"#);
    }

    #[test]
    fn strftime_now_is_not_defined() {
        let t = ChatTemplate::new(
            "{% if strftime_now is defined %}dated{% else %}fixed{% endif %}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(t.render(&[], true).unwrap(), "fixed");
    }

    mod fuzz {
        //! Property tests: any messages — Jinja-looking text, NUL, control and Unicode
        //! whitespace characters, long strings, any role — render as Hugging Face's Jinja2 would, written
        //! out here by hand for each template, or fail with the template's own error; never a panic.

        use proptest::prelude::*;

        use super::super::*;
        use super::{SMOLLM2, msg};
        use crate::fuzz_strategies::hostile_text;

        /// Gemma 3's published chat template (it `trim`s every message's content).
        const GEMMA3: &str = "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = \"\" -%}{%- set loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}";

        /// A template in the style of Llama 3 and Qwen: refuses unknown roles, `.strip()`s the content and
        /// writes each message with `tojson`.
        const STRICT: &str = "{% for m in messages %}{% if m.role not in ['system', 'user', 'assistant'] %}{{ raise_exception('unknown role') }}{% endif %}<|{{ m.role }}|>{{ m.content.strip() }}|{{ m.content.lstrip() }}|{{ m.content.rstrip() }}|{{ m | tojson }}{% endfor %}";

        /// Python's `str.isspace()` characters, as CPython 3 lists them
        /// (`[c for c in range(0x110000) if chr(c).isspace()]`).
        fn python_space(c: char) -> bool {
            matches!(c, '\t'..='\r' | '\u{1c}'..='\u{20}' | '\u{85}' | '\u{a0}' | '\u{1680}'
                | '\u{2000}'..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}')
        }

        /// Python's `json.dumps(s, ensure_ascii=False)` of a string.
        fn python_json_string(s: &str) -> String {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }

        fn role() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => prop::sample::select(&["system", "user", "assistant"][..]).prop_map(String::from),
                1 => hostile_text(),
            ]
        }

        fn messages(n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<ChatMessage>> {
            let message = (role(), hostile_text(), prop::option::of(hostile_text())).prop_map(
                |(role, content, name)| ChatMessage {
                    role,
                    content,
                    name,
                },
            );
            prop::collection::vec(message, n)
        }

        proptest! {
            #[test]
            fn chatml_renders_every_message_verbatim(messages in messages(0..5), generation in any::<bool>()) {
                let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
                let mut expected = String::new();
                if messages.first().is_some_and(|m| m.role != "system") {
                    expected.push_str("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n");
                }
                for m in &messages {
                    expected.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content));
                }
                if generation {
                    expected.push_str("<|im_start|>assistant\n");
                }
                prop_assert_eq!(t.render(&messages, generation).unwrap(), expected);
            }

            #[test]
            fn gemma_trims_content_as_python_does(messages in messages(1..5)) {
                let t = ChatTemplate::new(GEMMA3, "<bos>", "<eos>").unwrap();
                let (prefix, turns) = match messages[0].role.as_str() {
                    "system" => (format!("{}\n\n", messages[0].content), &messages[1..]),
                    _ => (String::new(), &messages[..]),
                };
                let mut expected = String::from("<bos>");
                for (i, m) in turns.iter().enumerate() {
                    let role = if m.role == "assistant" { "model" } else { &m.role };
                    let first = if i == 0 { prefix.as_str() } else { "" };
                    let content = m.content.trim_matches(python_space);
                    expected.push_str(&format!("<start_of_turn>{role}\n{first}{content}<end_of_turn>\n"));
                }
                expected.push_str("<start_of_turn>model\n");
                prop_assert_eq!(t.render(&messages, true).unwrap(), expected);
            }

            #[test]
            fn strict_templates_strip_dump_and_refuse_as_python_does(messages in messages(0..4)) {
                let t = ChatTemplate::new(STRICT, "", "").unwrap();
                let known = ["system", "user", "assistant"];
                let got = t.render(&messages, true);
                if messages.iter().any(|m| !known.contains(&m.role.as_str())) {
                    let e = got.unwrap_err();
                    prop_assert!(e.to_string().contains("unknown role"), "{}", e);
                    return Ok(());
                }
                let mut expected = String::new();
                for m in &messages {
                    let c = &m.content;
                    let mut json = format!("{{\"role\": {}, \"content\": {}", python_json_string(&m.role), python_json_string(c));
                    if let Some(name) = &m.name {
                        json.push_str(&format!(", \"name\": {}", python_json_string(name)));
                    }
                    expected.push_str(&format!(
                        "<|{}|>{}|{}|{}|{json}}}",
                        m.role,
                        c.trim_matches(python_space),
                        c.trim_start_matches(python_space),
                        c.trim_end_matches(python_space),
                    ));
                }
                prop_assert_eq!(got.unwrap(), expected);
            }
        }

        /// Found by `gemma_trims_content_as_python_does`: minijinja's `trim` and pycompat's `strip` kept the
        /// ASCII separators U+001C–U+001F, which Python's `str.strip()` removes, so the prompt differed from
        /// Hugging Face's.
        #[test]
        fn separator_characters_are_whitespace_as_in_python() {
            let t = ChatTemplate::new(GEMMA3, "<bos>", "<eos>").unwrap();
            assert_eq!(
                t.render(&[msg("user", "\u{1f}Hi\u{1c}")], true).unwrap(),
                "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
            );
            let t = ChatTemplate::new("{{ messages[0].content.strip() }}", "", "").unwrap();
            assert_eq!(
                t.render(&[msg("user", "\u{1d} a \u{1e}")], true).unwrap(),
                "a"
            );
        }
    }
}
