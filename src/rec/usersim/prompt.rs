//! The keyword pass's prompt and the lenient reading of its answers.
//!
//! A prompt file (`prompts/usersim_item.txt`) is a conversation in sections headed by
//! `### system`, `### user` and `### assistant` lines. The last section must be an assistant
//! section: it is the *answer prefix*, written after the chat template's opened assistant turn
//! (e.g. `Keywords:`), so that a small model starts in the format instead of copying the
//! instructions. `{item}` in any section is replaced by the item's text (the template of
//! [`crate::rec::items`]). Earlier assistant sections are few-shot answers.
//!
//! An answer is read leniently ([`parse_answer`]): the first line that starts with each label
//! (`Keywords:`, `Pros:`, `Cons:`; any case, a leading `-`/`*` allowed) gives that list, split on
//! `,` and `;`. Each keyword is lower-cased, stripped of quotes, brackets and trailing
//! punctuation; empty ones, placeholders (`<...>`), ones longer than 40 characters or 4 words,
//! and repeats are dropped; at most 8 are kept. A list copied verbatim from a few-shot answer is
//! dropped (the model echoed the prompt). Whatever is missing or dropped is said in the reason;
//! nothing about an answer is an error.

use anyhow::{bail, ensure, Result};

use crate::model::tokenizer::Message;
use crate::model::Tokenizer;

/// The lists an answer holds, in the order they are asked for.
pub const LABELS: [&str; 3] = ["keywords", "pros", "cons"];
/// At most this many keywords per list.
pub const MAX_KEYWORDS: usize = 8;

/// A parsed prompt file.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptTemplate {
    /// `(role, content)` in order; the last is the user turn holding `{item}`.
    pub messages: Vec<(String, String)>,
    /// Written after the opened assistant turn; the answer is read as `prefix + completion`.
    pub answer_prefix: String,
    /// The few-shot answers' lists (keywords, pros, cons), to recognise an echo.
    pub examples: Vec<[Vec<String>; 3]>,
}

impl PromptTemplate {
    /// Parses a prompt file's text (see the module docs).
    pub fn parse(text: &str) -> Result<Self> {
        let mut sections: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if let Some(role) = line.strip_prefix("### ") {
                let role = role.trim().to_ascii_lowercase();
                ensure!(
                    ["system", "user", "assistant"].contains(&role.as_str()),
                    "prompt section `### {role}`: the roles are system, user and assistant"
                );
                sections.push((role, String::new()));
            } else if let Some((_, body)) = sections.last_mut() {
                if !body.is_empty() {
                    body.push('\n');
                }
                body.push_str(line);
            } else if !line.trim().is_empty() {
                bail!("the prompt file must start with a `### system` or `### user` line");
            }
        }
        let Some((role, prefix)) = sections.pop() else {
            bail!("the prompt file has no `### ...` sections");
        };
        ensure!(
            role == "assistant",
            "the prompt file's last section must be `### assistant` (the answer prefix, e.g. \
             `Keywords:`)"
        );
        ensure!(
            sections
                .last()
                .is_some_and(|(r, c)| r == "user" && c.contains("{item}")),
            "the prompt file's last user section must hold `{{item}}`"
        );
        let examples = sections
            .iter()
            .filter(|(r, _)| r == "assistant")
            .map(|(_, c)| parse_answer(c, &[]).lists)
            .collect();
        Ok(Self {
            messages: sections,
            answer_prefix: prefix.trim_end().to_string(),
            examples,
        })
    }

    /// The full prompt text for one item: the chat template over the messages (the assistant
    /// turn opened), then the answer prefix. A tokenizer without a chat template gets
    /// `role: content` lines.
    pub fn render(&self, tok: &Tokenizer, item_text: &str) -> Result<String> {
        let msgs: Vec<Message> = self
            .messages
            .iter()
            .map(|(r, c)| Message::new(r, &c.replace("{item}", item_text)))
            .collect();
        let head = if tok.chat_template.is_some() {
            tok.apply_chat_template(&msgs, true)?
        } else {
            let mut s: String = msgs
                .iter()
                .map(|m| format!("{}: {}\n", m.role, m.content))
                .collect();
            s.push_str("assistant: ");
            s
        };
        Ok(format!("{head}{}", self.answer_prefix))
    }
}

/// What one answer says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parsed {
    /// keywords (objective attributes), pros, cons.
    pub lists: [Vec<String>; 3],
    /// Why something is missing (`None`: all three lists found and kept).
    pub reason: Option<String>,
}

/// Reads an answer (the answer prefix plus the completion) leniently; `examples` are the
/// few-shot lists an echo is recognised by.
pub fn parse_answer(text: &str, examples: &[[Vec<String>; 3]]) -> Parsed {
    let mut out = Parsed::default();
    let mut why = Vec::new();
    for (k, label) in LABELS.iter().enumerate() {
        let line = text.lines().find_map(|l| {
            let l = l.trim().trim_start_matches(['-', '*', ' ']);
            let (head, rest) = l.split_once(':')?;
            head.trim().eq_ignore_ascii_case(label).then_some(rest)
        });
        let Some(line) = line else {
            why.push(format!("no `{label}:` line"));
            continue;
        };
        let list = keywords(line);
        if list.is_empty() {
            why.push(format!("`{label}:` holds no usable keyword"));
        } else if examples.iter().any(|e| e[k] == list) {
            why.push(format!("`{label}:` copies the prompt's example"));
        } else {
            out.lists[k] = list;
        }
    }
    if !why.is_empty() {
        out.reason = Some(why.join("; "));
    }
    out
}

/// One comma/semicolon-separated list → clean keywords (module docs).
pub fn keywords(line: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for raw in line.split([',', ';']) {
        let k = raw
            .trim()
            .trim_matches(|c: char| "\"'`[](){}.!?:*".contains(c) || c.is_whitespace())
            .to_lowercase();
        let k = k.split_whitespace().collect::<Vec<_>>().join(" ");
        let placeholder = k.starts_with('<') || k.ends_with('>');
        if k.is_empty() || placeholder || k.len() > 40 || k.split(' ').count() > 4 {
            continue;
        }
        if !out.contains(&k) {
            out.push(k);
        }
        if out.len() == MAX_KEYWORDS {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "### system\nBe brief.\n### user\nMovie: Heat\n### assistant\n\
        Keywords: heist, la\nPros: acting\nCons: long\n### user\nMovie: {item}\n\
        ### assistant\nKeywords:\n";

    #[test]
    fn a_prompt_file_splits_into_turns_and_an_answer_prefix() {
        let t = PromptTemplate::parse(FILE).unwrap();
        assert_eq!(t.messages.len(), 4);
        assert_eq!(t.messages[3], ("user".into(), "Movie: {item}".into()));
        assert_eq!(t.answer_prefix, "Keywords:");
        assert_eq!(t.examples[0][1], vec!["acting".to_string()]);
    }

    #[test]
    fn bad_prompt_files_are_errors_that_say_why() {
        let no_prefix = "### user\nMovie: {item}\n";
        assert!(
            format!("{:#}", PromptTemplate::parse(no_prefix).unwrap_err()).contains("last section")
        );
        let no_item = "### user\nMovie\n### assistant\nPros:";
        assert!(format!("{:#}", PromptTemplate::parse(no_item).unwrap_err()).contains("{item}"));
        assert!(PromptTemplate::parse("hello\n### user\n{item}\n### assistant\nx").is_err());
    }

    #[test]
    fn a_well_formed_answer_gives_three_clean_lists() {
        let p = parse_answer(
            "Keywords: Toys, 'Pixar', toys\nPros: Humor; heart.\n- cons: [long runtime]",
            &[],
        );
        assert_eq!(p.lists[0], ["toys", "pixar"]);
        assert_eq!(p.lists[1], ["humor", "heart"]);
        assert_eq!(p.lists[2], ["long runtime"]);
        assert_eq!(p.reason, None);
    }

    #[test]
    fn a_malformed_answer_gives_empty_lists_and_the_reason() {
        let p = parse_answer("I am sorry, I cannot help.", &[]);
        assert_eq!(p.lists, [vec![], vec![], vec![]] as [Vec<String>; 3]);
        let r = p.reason.unwrap();
        assert!(
            r.contains("no `keywords:` line") && r.contains("no `cons:` line"),
            "{r}"
        );
        let p = parse_answer("Keywords: <one or two words>\nPros: a, b\nCons:", &[]);
        assert!(p.lists[0].is_empty() && p.lists[2].is_empty());
        assert_eq!(p.lists[1], ["a", "b"]);
    }

    #[test]
    fn an_echo_of_the_example_is_dropped() {
        let ex = [vec!["x".to_string()], vec!["acting".to_string()], vec![]];
        let p = parse_answer("Keywords: y\nPros: acting\nCons: slow", &[ex]);
        assert!(p.lists[1].is_empty());
        assert!(p.reason.unwrap().contains("copies"));
        assert_eq!(p.lists[2], ["slow"]);
    }

    #[test]
    fn long_or_wordy_keywords_are_dropped_and_lists_are_capped() {
        let many: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
        assert_eq!(keywords(&many.join(",")).len(), MAX_KEYWORDS);
        assert!(keywords("a very long keyword with many words").is_empty());
    }
}
