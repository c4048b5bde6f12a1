//! Reading a recipe file and applying `--set a.b=value` overrides to its TOML before it is
//! deserialized into a [`Recipe`].

use std::path::Path;

use anyhow::{ensure, Context, Result};

use super::Recipe;

/// Read a recipe, apply `--set` overrides, deserialize. Errors carry the file and, for syntax and
/// type errors in the file, serde's line/column and the valid names.
pub fn load_recipe(path: &Path, overrides: &[String]) -> Result<Recipe> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading recipe {}; hint: recipes/ has examples",
            path.display()
        )
    })?;
    parse_recipe(&text, overrides).with_context(|| format!("in recipe {}", path.display()))
}

pub fn parse_recipe(text: &str, overrides: &[String]) -> Result<Recipe> {
    // Parse the file as written first, so its own mistakes are reported with line and column.
    let _: Recipe = toml::from_str(text)?;
    let mut value: toml::Value = toml::from_str(text)?;
    for o in overrides {
        apply_override(&mut value, o)?;
        clear_other_length(&mut value, o);
    }
    let recipe: Recipe = value.try_into().context("after applying --set overrides")?;
    Ok(recipe)
}

/// A run's length is `train.max_steps` or `train.epochs` (which, when present, sets max_steps
/// at resolution). An override of one drops the other, so `--set train.max_steps=3` on a recipe
/// written in epochs runs 3 steps instead of being silently replaced by the epoch count.
fn clear_other_length(root: &mut toml::Value, spec: &str) {
    let key = spec.split_once('=').map_or("", |(k, _)| k.trim());
    let other = match key {
        "train.max_steps" => "epochs",
        "train.epochs" => "max_steps",
        _ => return,
    };
    if let Some(train) = root.get_mut("train").and_then(|t| t.as_table_mut()) {
        train.remove(other);
    }
}

/// `a.b.c=value`: value parsed as TOML (number, bool, string, array, inline table), else a string.
pub fn apply_override(root: &mut toml::Value, spec: &str) -> Result<()> {
    let (key, raw) = spec.split_once('=').with_context(|| {
        format!("--set `{spec}`: expected KEY=VALUE, e.g. --set train.max_steps=20")
    })?;
    let key = key.trim();
    ensure!(!key.is_empty(), "--set `{spec}`: empty key");
    let raw = raw.trim();
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("parsed table has v"),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = root;
    for (i, part) in parts.iter().enumerate() {
        let table = cur
            .as_table_mut()
            .with_context(|| format!("--set {key}: `{}` is not a table", parts[..i].join(".")))?;
        if i + 1 == parts.len() {
            table.insert(part.to_string(), value);
            return Ok(());
        }
        cur = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    Ok(())
}
