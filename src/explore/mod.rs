//! Exploration bonuses added to advantages (or ROVER's centered rewards) after the group
//! normalization. One variant today, i-MENTOR ([`imentor`]); a recipe selects it with
//!
//! ```toml
//! [exploration]
//! name = "imentor"
//! max_bonus = 0.5       # every other key optional, see `ImentorConfig`
//! ```
//!
//! Deliberately not here: count-based or policy-entropy bonuses, and anything per token; the
//! bonus is one scalar per trajectory.

pub mod bonus;
pub mod features;
pub mod imentor;

use serde::{Deserialize, Serialize};

pub use features::NgramProjection;
pub use imentor::{BonusTo, Imentor, ImentorConfig, ImentorStats, Integration, Outcome};

/// The `[exploration]` table of a recipe (absent = no exploration bonus).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum ExplorationConfig {
    Imentor(ImentorConfig),
}

impl ExplorationConfig {
    /// Checks ranges; call when resolving a recipe.
    pub fn validate(&self) -> anyhow::Result<()> {
        match self {
            Self::Imentor(c) => c.validate(),
        }
    }
}

/// The one place a variant becomes an implementation. `seed` should be derived from the run seed.
pub fn build(cfg: &ExplorationConfig, seed: u64) -> anyhow::Result<Imentor> {
    match cfg {
        ExplorationConfig::Imentor(c) => Imentor::new(c, seed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Recipe {
        exploration: Option<ExplorationConfig>,
    }

    #[test]
    fn recipe_table_parses_with_defaults_and_rejects_unknown_keys() {
        let r: Recipe = toml::from_str("[exploration]\nname = \"imentor\"\n").unwrap();
        assert_eq!(
            r.exploration,
            Some(ExplorationConfig::Imentor(ImentorConfig::default()))
        );
        let r: Recipe = toml::from_str(
            "[exploration]\nname = \"imentor\"\nmax_bonus = 0.3\nintegration = \"bounded\"\nbonus_to = \"all\"\n",
        )
        .unwrap();
        let Some(ExplorationConfig::Imentor(c)) = r.exploration else {
            panic!()
        };
        assert_eq!(
            (c.max_bonus, c.integration, c.bonus_to),
            (0.3, Integration::Bounded, BonusTo::All)
        );
        let r: Recipe = toml::from_str(
            "[exploration]\nname = \"imentor\"\nbonus_to = \"incorrect_answered\"\n",
        )
        .unwrap();
        let Some(ExplorationConfig::Imentor(c)) = r.exploration else {
            panic!()
        };
        assert_eq!(c.bonus_to, BonusTo::IncorrectAnswered);
        let e = toml::from_str::<Recipe>("[exploration]\nname = \"imentor\"\nmax_bonu = 0.3\n")
            .unwrap_err();
        assert!(e.to_string().contains("max_bonus"), "{e}");
        let e = toml::from_str::<Recipe>("[exploration]\nname = \"rnd\"\n").unwrap_err();
        assert!(e.to_string().contains("imentor"), "{e}");
        assert!(toml::from_str::<Recipe>("").unwrap().exploration.is_none());
        assert!(build(&ExplorationConfig::Imentor(ImentorConfig::default()), 0).is_ok());
    }
}
