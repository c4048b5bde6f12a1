//! MiniOneRec's CSV splits (`user_id, history_item_title, item_title, history_item_id, item_id,
//! history_item_sid, item_sid`; history columns are Python-literal lists), read into the same
//! examples as the other logs (see `sequences`).

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

use super::sequences::{Example, ItemIds};

// ------------------------------------------------------------------------------------------------
// MiniOneRec CSV splits

/// The exact header MiniOneRec's CSV splits carry.
pub const CSV_COLUMNS: [&str; 7] = [
    "user_id",
    "history_item_title",
    "item_title",
    "history_item_id",
    "item_id",
    "history_item_sid",
    "item_sid",
];

/// One row of a MiniOneRec CSV split, ids and SIDs raw.
#[derive(Clone, Debug, PartialEq)]
pub struct CsvExample {
    pub user: String,
    pub history_titles: Vec<String>,
    pub title: String,
    pub history_ids: Vec<String>,
    pub item_id: String,
    /// One SID per history item, each a list of level tokens (`["<a_1>", "<b_2>", "<c_3>"]`).
    pub history_sids: Vec<Vec<String>>,
    pub sid: Vec<String>,
    /// 1-based line in the file (header = 1).
    pub row: usize,
}

/// Splits `<a_165><b_214><c_252>` into its level tokens. Levels must be `a`, `b`, `c`, … in order
/// (one token namespace per level), each code a decimal number.
pub fn parse_sid(s: &str) -> Result<Vec<String>, String> {
    let s = s.trim();
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let Some(body) = rest.strip_prefix('<') else {
            return Err(format!("`{s}`: expected `<` at `{rest}`"));
        };
        let Some(end) = body.find('>') else {
            return Err(format!("`{s}`: unclosed `<`"));
        };
        let token = &body[..end];
        let level = (b'a' + out.len() as u8) as char;
        let code = token
            .strip_prefix(level)
            .and_then(|t| t.strip_prefix('_'))
            .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()));
        if code.is_none() || out.len() >= 26 {
            return Err(format!(
                "`{s}`: token `<{token}>` should be `<{level}_N>` (level {} of the SID)",
                out.len() + 1
            ));
        }
        out.push(format!("<{token}>"));
        rest = &body[end + 1..];
    }
    if out.is_empty() {
        return Err("empty SID".into());
    }
    Ok(out)
}

/// Parses a Python-literal list of strings or numbers: `['a', "b's"]`, `[1, 2.5]`, `[]`.
/// Numbers are returned as written; strings unescaped (`\\`, `\'`, `\"`, `\n`, `\t`).
pub fn parse_py_list(s: &str) -> Result<Vec<String>, String> {
    let t = s.trim();
    let Some(inner) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
        return Err(format!("`{}` is not a list (no surrounding [ ])", short(t)));
    };
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        if c == '\'' || c == '"' {
            chars.next();
            let mut v = String::new();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated string in `{}`", short(t))),
                    Some('\\') => match chars.next() {
                        Some('n') => v.push('\n'),
                        Some('t') => v.push('\t'),
                        Some(e) => v.push(e),
                        None => return Err(format!("dangling \\ in `{}`", short(t))),
                    },
                    Some(q) if q == c => break,
                    Some(x) => v.push(x),
                }
            }
            out.push(v);
        } else {
            let mut v = String::new();
            while chars.peek().is_some_and(|&x| x != ',') {
                v.push(chars.next().unwrap_or(','));
            }
            let v = v.trim().to_string();
            if v.parse::<f64>().is_err() {
                return Err(format!(
                    "element `{v}` of `{}` is neither a quoted string nor a number",
                    short(t)
                ));
            }
            out.push(v);
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => break,
            Some(',') => continue,
            Some(x) => {
                return Err(format!(
                    "expected `,` or `]`, found `{x}` in `{}`",
                    short(t)
                ))
            }
        }
    }
    Ok(out)
}

fn short(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Reads a MiniOneRec CSV split. Every row must have a non-empty history whose id, title and SID
/// lists have equal lengths, and well-formed SIDs; the first bad row is the error.
pub fn read_minionerec_csv(path: &Path) -> Result<Vec<CsvExample>> {
    let mut rdr = csv::Reader::from_path(path)
        .with_context(|| format!("reading MiniOneRec CSV {}", path.display()))?;
    let header: Vec<String> = rdr
        .headers()
        .with_context(|| format!("{}: reading the header", path.display()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut idx = [0usize; 7];
    for (k, name) in CSV_COLUMNS.iter().enumerate() {
        idx[k] = header.iter().position(|h| h == name).with_context(|| {
            format!(
                "{}: no `{name}` column; hint: MiniOneRec's header is {}",
                path.display(),
                CSV_COLUMNS.join(",")
            )
        })?;
    }
    let mut out = Vec::new();
    for (k, rec) in rdr.records().enumerate() {
        let row = k + 2;
        let rec = rec.with_context(|| format!("{} row {row}: not valid CSV", path.display()))?;
        let at = |c: usize| rec.get(idx[c]).unwrap_or("");
        let ctx = |what: &str, e: String| {
            anyhow::anyhow!("{} row {row}: column `{what}`: {e}", path.display())
        };
        let list = |c: usize| parse_py_list(at(c)).map_err(|e| ctx(CSV_COLUMNS[c], e));
        let (history_titles, history_ids, hist_sids) = (list(1)?, list(3)?, list(5)?);
        if history_ids.is_empty() {
            bail!(
                "{} row {row}: empty history (`history_item_id` is []); every example needs at \
                 least one earlier item; hint: drop users' first interactions",
                path.display()
            );
        }
        ensure!(
            history_ids.len() == hist_sids.len() && history_ids.len() == history_titles.len(),
            "{} row {row}: history lists differ in length (ids {}, titles {}, sids {})",
            path.display(),
            history_ids.len(),
            history_titles.len(),
            hist_sids.len()
        );
        let history_sids = hist_sids
            .iter()
            .map(|s| parse_sid(s).map_err(|e| ctx("history_item_sid", e)))
            .collect::<Result<Vec<_>>>()?;
        let sid = parse_sid(at(6)).map_err(|e| ctx("item_sid", e))?;
        let item_id = at(4).trim().to_string();
        ensure!(
            !item_id.is_empty(),
            "{} row {row}: empty item_id",
            path.display()
        );
        out.push(CsvExample {
            user: at(0).trim().to_string(),
            history_titles,
            title: at(2).to_string(),
            history_ids,
            item_id,
            history_sids,
            sid,
            row,
        });
    }
    Ok(out)
}

/// Fails on the first CSV row naming an item (history or target) not in `known`.
pub fn validate_csv_items(
    path: &Path,
    rows: &[CsvExample],
    known: &HashSet<String>,
    table: &str,
) -> Result<()> {
    for r in rows {
        for id in r.history_ids.iter().chain(std::iter::once(&r.item_id)) {
            ensure!(
                known.contains(id),
                "{} row {}: item `{id}` is not in {table}; hint: use the index built for this \
                 dataset",
                path.display(),
                r.row
            );
        }
    }
    Ok(())
}

/// Dense [`Example`]s from CSV rows, interning ids into `items`; histories truncated to
/// `max_history`; the row number stands in for the timestamp (the CSVs are time-sorted).
pub fn csv_examples(rows: &[CsvExample], items: &mut ItemIds, max_history: usize) -> Vec<Example> {
    rows.iter()
        .map(|r| {
            let h = &r.history_ids[r.history_ids.len().saturating_sub(max_history)..];
            Example {
                user: r.user.clone(),
                history: h.iter().map(|id| items.intern(id)).collect(),
                target: items.intern(&r.item_id),
                timestamp: r.row as f64,
            }
        })
        .collect()
}
