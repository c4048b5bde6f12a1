//! The keyword pass's [`TextGenerator`] on a causal LM (SmolLM2-135M-Instruct by default, any
//! supported model): batched, seeded generation through [`crate::generate`].

use anyhow::Result;
use candle_core::Device;

use super::profile::TextGenerator;
use super::prompt::PromptTemplate;
use crate::generate::{self, Finish, SamplingConfig};
use crate::model::{Decoder, LoadedModel, Mode};

/// A loaded model with its sampling settings.
pub struct LlmGenerator {
    decoder: Decoder,
    model: LoadedModel,
    cfg: SamplingConfig,
    seed: u64,
    /// Where the model came from (part of the cache key).
    source: String,
    device: Device,
}

impl LlmGenerator {
    pub fn new(
        model: LoadedModel,
        source: &str,
        cfg: SamplingConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let decoder = Decoder::new(&model.config, &model.params, Mode::Infer)?;
        Ok(Self {
            decoder,
            model,
            cfg,
            seed,
            source: source.to_string(),
            device: device.clone(),
        })
    }
}

impl TextGenerator for LlmGenerator {
    fn fingerprint(&self) -> String {
        let c = &self.cfg;
        // The seed matters only when sampling; greedy answers do not depend on it.
        let seed = if c.temperature == 0.0 {
            "greedy".to_string()
        } else {
            format!("seed {}", self.seed)
        };
        format!(
            "{} | t {} top_k {} top_p {} max_new {} stop {:?} | {seed}",
            self.source, c.temperature, c.top_k, c.top_p, c.max_new_tokens, c.stop
        )
    }

    fn render(&self, template: &PromptTemplate, item_text: &str) -> Result<String> {
        template.render(&self.model.tokenizer, item_text)
    }

    fn complete(&mut self, prompts: &[String]) -> Result<Vec<(String, String)>> {
        let tok = &self.model.tokenizer;
        // The chat template already holds the special tokens: add none.
        let ids: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| tok.encode(p, false))
            .collect::<Result<_>>()?;
        // A sample's seed comes from its prompt's text: the same item draws the same answer
        // whatever its batch, and after a resume.
        let seeds: Vec<Vec<u64>> = prompts
            .iter()
            .map(|p| vec![generate::sample_seed(self.seed, text_hash(p), 0)])
            .collect();
        let outs = generate::generate(&self.decoder, tok, &ids, &seeds, &self.cfg, &self.device)?;
        Ok(outs
            .into_iter()
            .map(|o| {
                let finish = match o.finish_reason {
                    Finish::Eos => "eos",
                    Finish::Stop => "stop",
                    Finish::Length => "length",
                    Finish::Constrained => "no_allowed_token",
                };
                (o.text, finish.to_string())
            })
            .collect())
    }
}

/// FNV-1a of a text: a stable 64-bit id for seeding.
fn text_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}
