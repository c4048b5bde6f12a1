//! Tokenizer and chat template.
//!
//! Text ↔ ids through HF `tokenizers`; chat prompts rendered from the model's own Jinja
//! `chat_template` (from `tokenizer_config.json` or GGUF metadata) with minijinja plus its Python
//! compatibility layer, the way transformers' `apply_chat_template` does, so prompts match the
//! ones the model was tuned on token for token.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    /// Ids that end generation (EOS of the tokenizer, config and generation config).
    pub eos_ids: Vec<u32>,
}

/// A special token in `tokenizer_config.json` is a string or `{"content": ...}`.
fn special(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl Tokenizer {
    pub fn new(
        inner: tokenizers::Tokenizer,
        chat_template: Option<String>,
        bos_token: Option<String>,
        eos_token: Option<String>,
        pad_token: Option<String>,
    ) -> Self {
        let mut t = Self {
            inner,
            chat_template,
            bos_token,
            eos_token,
            pad_token,
            eos_ids: vec![],
        };
        if let Some(id) = t.eos_token.as_deref().and_then(|e| t.token_id(e)) {
            t.eos_ids.push(id);
        }
        t
    }

    /// `tokenizer.json` plus the optional `tokenizer_config.json` beside it.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tj = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&tj).map_err(|e| {
            anyhow!(
                "reading {}: {e}; a model directory needs the HF `tokenizer.json` \
                 (save it with `tokenizer.save_pretrained(dir)`)",
                tj.display()
            )
        })?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: Value = if cfg_path.exists() {
            let s = std::fs::read_to_string(&cfg_path)
                .with_context(|| format!("reading {}", cfg_path.display()))?;
            serde_json::from_str(&s).with_context(|| format!("parsing {}", cfg_path.display()))?
        } else {
            Value::Null
        };
        let mut chat_template = match cfg.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default".
            Some(Value::Array(a)) => a
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        };
        let jinja = dir.join("chat_template.jinja");
        if chat_template.is_none() && jinja.exists() {
            chat_template = Some(
                std::fs::read_to_string(&jinja)
                    .with_context(|| format!("reading {}", jinja.display()))?,
            );
        }
        Ok(Self::new(
            inner,
            chat_template,
            special(cfg.get("bos_token")),
            special(cfg.get("eos_token")),
            special(cfg.get("pad_token")),
        ))
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Adds `tokens` as *non-special* added tokens, the way transformers' `tokenizer.add_tokens`
    /// does (`AddedToken(content, special=False)`, so `normalized = true`): they are matched in
    /// raw text before the model's own splitting, and decoding keeps them as text, also with
    /// `skip_special = true` (a special token would vanish from decoded completions). Returns each
    /// token's id in order. A token already in the vocabulary keeps its id and is not re-added
    /// (a vocabulary piece would otherwise become an added token and change how text around it
    /// splits); the tokenizers crate numbers the new ones on from the current length.
    pub fn add_tokens(&mut self, tokens: &[&str]) -> Result<Vec<u32>> {
        let new: Vec<tokenizers::AddedToken> = tokens
            .iter()
            .filter(|t| self.token_id(t).is_none())
            .map(|t| tokenizers::AddedToken::from(t.to_string(), false))
            .collect();
        if !new.is_empty() {
            self.inner
                .add_tokens(new)
                .map_err(|e| anyhow!("adding tokens to the tokenizer: {e}"))?;
        }
        tokens
            .iter()
            .map(|t| {
                self.token_id(t)
                    .with_context(|| format!("token {t:?} has no id after adding it (empty?)"))
            })
            .collect()
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Ids of `text`. `add_special` adds the tokenizer's BOS/EOS template where it has one; chat
    /// prompts are encoded without it because the template already wrote them.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| anyhow!("tokenizing: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`; model output never errors, so a failure decodes to the empty string.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        self.inner.decode(ids, skip_special).unwrap_or_default()
    }

    /// Pad id for batching: the pad token, else EOS, else 0 (pad slots are masked, any id works).
    pub fn pad_id(&self) -> u32 {
        self.pad_token
            .as_deref()
            .and_then(|p| self.token_id(p))
            .or_else(|| self.eos_ids.first().copied())
            .unwrap_or(0)
    }

    pub fn add_eos_ids(&mut self, ids: &[u32]) {
        for &id in ids {
            if !self.eos_ids.contains(&id) {
                self.eos_ids.push(id);
            }
        }
    }

    /// Render `messages` with the model's chat template.
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self.chat_template.as_deref().context(
            "this model has no chat template (tokenizer_config.json `chat_template`); \
             drop --chat / set `chat_template = false` to use plain prompts",
        )?;
        render_chat_template(
            template,
            messages,
            add_generation_prompt,
            self.bos_token.as_deref(),
            self.eos_token.as_deref(),
        )
    }
}

/// Render an HF Jinja chat template the way transformers does (trim_blocks, lstrip_blocks,
/// Python string methods, `raise_exception`).
pub fn render_chat_template(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: Option<&str>,
    eos_token: Option<&str>,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", template)
        .context("parsing the chat template")?;
    let tmpl = env
        .get_template("chat")
        .context("loading the chat template")?;
    tmpl.render(minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token.unwrap_or(""),
        eos_token => eos_token.unwrap_or(""),
    })
    .context("rendering the chat template")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_renders_like_transformers() {
        let s =
            render_chat_template(CHATML, &[Message::new("user", "Hi")], true, None, None).unwrap();
        assert_eq!(
            s,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_string_methods_work() {
        let t = "{% for m in messages %}{{ m['content'].strip() }}{% endfor %}";
        let s =
            render_chat_template(t, &[Message::new("user", "  x  ")], false, None, None).unwrap();
        assert_eq!(s, "x");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = "{{ raise_exception('no system role') }}";
        assert!(render_chat_template(t, &[], false, None, None).is_err());
    }
}
