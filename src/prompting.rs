//! Example → prompt text (template slots) → chat template → token ids. Shared by training,
//! evaluation and SFT so all three see the same prompt for the same example.

use anyhow::Result;

use crate::data::{Example, PromptTemplate};
use crate::model::{Message, Tokenizer};

pub struct Prompter<'a> {
    pub template: &'a PromptTemplate,
    pub chat: bool,
    /// Overrides the template's own system prompt.
    pub system: Option<&'a str>,
}

impl Prompter<'_> {
    /// The text the model sees (chat-formatted when `chat`, with the assistant turn opened).
    pub fn text(&self, tok: &Tokenizer, ex: &Example) -> Result<String> {
        let user = self.template.render(ex)?;
        if !self.chat {
            return Ok(user);
        }
        let system = match self.system {
            Some(s) => Some(s.to_string()),
            None => self.template.render_system(ex)?,
        };
        let mut msgs = Vec::new();
        if let Some(s) = system {
            msgs.push(Message::new("system", &s));
        }
        msgs.push(Message::new("user", &user));
        tok.apply_chat_template(&msgs, true)
    }

    pub fn ids(&self, tok: &Tokenizer, ex: &Example) -> Result<Vec<u32>> {
        let text = self.text(tok, ex)?;
        // A chat template writes its own special tokens; a plain prompt gets the tokenizer's.
        tok.encode(&text, !self.chat)
    }
}
