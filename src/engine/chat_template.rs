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

use super::types::ScoreError;

/// One chat message: `role` and text `content`, plus the optional `name` some templates read.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

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
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", python_tojson);
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

impl serde_json::ser::Formatter for PythonCompactFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
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
}
