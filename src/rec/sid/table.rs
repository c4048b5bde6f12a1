//! The item ↔ Semantic-ID table: each item a short code sequence, coarse to fine, one token
//! namespace per level (`<a_12>`, `<b_3>`, `<c_200>`, …), read and written in MiniOneRec's index
//! format (`{"item_id": ["<a_12>", "<b_3>", "<c_200>"]}`), so indexes move between llmrl and
//! that ecosystem.
//!
//! A table may hold collisions (several items with one SID: HSRL's "leave them" mode, or an index
//! made elsewhere). A SID then stands for the *set* of its items: they tie in every ranking and a
//! hit is the target being in that set. [`SidTable::is_bijection`] says whether that can happen.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

use super::super::minionerec_csv::parse_sid;

/// Code sequences of items, and the reverse map from a code sequence to its items.
#[derive(Clone, Debug, PartialEq)]
pub struct SidTable {
    /// Codes per level (the token namespace of level l is `0..sizes[l]`).
    sizes: Vec<usize>,
    /// Raw item ids in table order.
    items: Vec<String>,
    /// codes[i]: item i's code at each level, `codes[i].len() == sizes.len()`.
    codes: Vec<Vec<u32>>,
    by_id: HashMap<String, usize>,
    /// A code sequence → its items (table order, several when they collide).
    by_codes: HashMap<Vec<u32>, Vec<usize>>,
}

/// The token of `code` at `level`: `<a_12>` for level 0, code 12 (levels `a`..`z`).
pub fn level_token(level: usize, code: u32) -> String {
    format!("<{}_{code}>", (b'a' + level as u8) as char)
}

/// `<b_3>` → (1, 3); anything else → None.
pub fn parse_level_token(token: &str) -> Option<(usize, u32)> {
    let body = token.strip_prefix('<')?.strip_suffix('>')?;
    let (level, code) = body.split_once('_')?;
    let level = level.as_bytes();
    if level.len() != 1 || !level[0].is_ascii_lowercase() {
        return None;
    }
    if code.is_empty() || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(((level[0] - b'a') as usize, code.parse().ok()?))
}

impl SidTable {
    /// A table from items and their codes. `sizes` may be empty: then each level's size is its
    /// largest code + 1. Errors on duplicate ids, ragged code lengths or codes out of range.
    pub fn new(items: Vec<String>, codes: Vec<Vec<u32>>, sizes: Vec<usize>) -> Result<Self> {
        ensure!(
            items.len() == codes.len(),
            "{} items but {} code sequences",
            items.len(),
            codes.len()
        );
        ensure!(!items.is_empty(), "a SID table needs at least one item");
        let levels = codes[0].len();
        ensure!(
            levels > 0 && levels <= 26,
            "a SID has 1..=26 levels, got {levels}"
        );
        let sizes = if sizes.is_empty() {
            (0..levels)
                .map(|l| {
                    codes
                        .iter()
                        .map(|c| c.get(l).copied().unwrap_or(0) as usize + 1)
                        .max()
                        .unwrap_or(1)
                })
                .collect()
        } else {
            sizes
        };
        ensure!(
            sizes.len() == levels,
            "{} level sizes for {levels}-level codes",
            sizes.len()
        );
        let mut by_id = HashMap::with_capacity(items.len());
        let mut by_codes: HashMap<Vec<u32>, Vec<usize>> = HashMap::with_capacity(items.len());
        for (i, (id, c)) in items.iter().zip(&codes).enumerate() {
            ensure!(
                c.len() == levels,
                "item `{id}` has {} SID levels, the first item has {levels}",
                c.len()
            );
            for (l, (&code, &size)) in c.iter().zip(&sizes).enumerate() {
                ensure!(
                    (code as usize) < size,
                    "item `{id}`: code {code} at level {l} is outside the codebook of {size}"
                );
            }
            if by_id.insert(id.clone(), i).is_some() {
                bail!("item `{id}` appears twice in the SID table");
            }
            by_codes.entry(c.clone()).or_default().push(i);
        }
        Ok(Self {
            sizes,
            items,
            codes,
            by_id,
            by_codes,
        })
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// Number of SID levels.
    pub fn levels(&self) -> usize {
        self.sizes.len()
    }
    /// Codes per level.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }
    /// Raw item ids in table order.
    pub fn items(&self) -> &[String] {
        &self.items
    }
    /// Table index of a raw item id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }
    /// Item i's codes.
    pub fn codes(&self, i: usize) -> &[u32] {
        &self.codes[i]
    }
    /// Item i's level tokens, `["<a_12>", "<b_3>", "<c_200>"]`.
    pub fn tokens(&self, i: usize) -> Vec<String> {
        self.codes[i]
            .iter()
            .enumerate()
            .map(|(l, &c)| level_token(l, c))
            .collect()
    }
    /// Item i's SID as one string, `<a_12><b_3><c_200>` (MiniOneRec's `item_sid` column).
    pub fn sid_string(&self, i: usize) -> String {
        self.tokens(i).concat()
    }
    /// The items whose SID is `codes` (empty for a SID no item has).
    pub fn items_with(&self, codes: &[u32]) -> &[usize] {
        self.by_codes.get(codes).map(Vec::as_slice).unwrap_or(&[])
    }
    /// The items of a SID string such as `<a_12><b_3><c_200>` (empty when malformed or unknown:
    /// model output never errors).
    pub fn items_of_sid(&self, sid: &str) -> &[usize] {
        match parse_sid(sid) {
            Ok(tokens) => match self.codes_of_tokens(&tokens) {
                Some(codes) => self.items_with(&codes),
                None => &[],
            },
            Err(_) => &[],
        }
    }
    /// Level tokens → codes, None unless there is one valid token per level, in order.
    pub fn codes_of_tokens<S: AsRef<str>>(&self, tokens: &[S]) -> Option<Vec<u32>> {
        if tokens.len() != self.levels() {
            return None;
        }
        tokens
            .iter()
            .enumerate()
            .map(|(l, t)| match parse_level_token(t.as_ref()) {
                Some((tl, c)) if tl == l && (c as usize) < self.sizes[l] => Some(c),
                _ => None,
            })
            .collect()
    }
    /// Every level token of the code space, level by level (`<a_0>`..`<a_{K0-1}>`, `<b_0>`, …):
    /// the tokens a model's vocabulary gets, in a fixed order.
    pub fn all_tokens(&self) -> Vec<String> {
        self.sizes
            .iter()
            .enumerate()
            .flat_map(|(l, &k)| (0..k as u32).map(move |c| level_token(l, c)))
            .collect()
    }
    /// Distinct SIDs, each with its items, sorted by code sequence (deterministic).
    pub fn sids(&self) -> Vec<(&[u32], &[usize])> {
        let mut out: Vec<(&[u32], &[usize])> = self
            .by_codes
            .iter()
            .map(|(c, i)| (c.as_slice(), i.as_slice()))
            .collect();
        out.sort_unstable();
        out
    }
    /// True when no two items share a SID.
    pub fn is_bijection(&self) -> bool {
        self.by_codes.len() == self.items.len()
    }
    /// Share of items that are in a group of ≥ 2 items sharing one SID.
    pub fn collision_rate(&self) -> f64 {
        let colliding: usize = self
            .by_codes
            .values()
            .filter(|g| g.len() > 1)
            .map(Vec::len)
            .sum();
        colliding as f64 / self.items.len() as f64
    }

    /// Reads MiniOneRec's index JSON, `{"item_id": ["<a_12>", "<b_3>", "<c_200>"], …}`. Items
    /// keep the file's order; level sizes are the largest code + 1 unless `sizes` is given.
    pub fn read_index(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading SID index {}", path.display()))?;
        Self::parse_index(&text).with_context(|| {
            format!(
                "{}: expected MiniOneRec's index format {{\"item_id\": [\"<a_12>\", \"<b_3>\", ...]}} \
                 (`llmrl sid build` writes it)",
                path.display()
            )
        })
    }

    /// Parses the index JSON text (see [`SidTable::read_index`]).
    pub fn parse_index(text: &str) -> Result<Self> {
        // serde_json's `preserve_order` is off: keep the file's order by walking the raw map
        // through an order-preserving deserialization into a Vec of pairs.
        let entries: OrderedIndex =
            serde_json::from_str(text).context("not a JSON object of lists")?;
        let mut items = Vec::with_capacity(entries.0.len());
        let mut codes = Vec::with_capacity(entries.0.len());
        for (id, tokens) in entries.0 {
            let mut c = Vec::with_capacity(tokens.len());
            for (l, t) in tokens.iter().enumerate() {
                match parse_level_token(t) {
                    Some((tl, code)) if tl == l => c.push(code),
                    _ => bail!(
                        "item `{id}`: token `{t}` should be `{}` style (level {} of the SID)",
                        level_token(l, 0).replace('0', "N"),
                        l + 1
                    ),
                }
            }
            items.push(id);
            codes.push(c);
        }
        Self::new(items, codes, Vec::new())
    }

    /// Writes MiniOneRec's index JSON (items in table order), atomically.
    pub fn write_index(&self, path: &Path) -> Result<()> {
        let mut out = String::from("{\n");
        for i in 0..self.len() {
            let id = serde_json::to_string(&self.items[i])?;
            let toks = serde_json::to_string(&self.tokens(i))?;
            out.push_str(&format!(
                "  {id}: {toks}{}\n",
                if i + 1 < self.len() { "," } else { "" }
            ));
        }
        out.push_str("}\n");
        let tmp = path.with_extension("json.partial");
        std::fs::write(&tmp, out).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Level sizes summary per level: (codes used, codebook size).
    pub fn utilization(&self) -> Vec<(usize, usize)> {
        (0..self.levels())
            .map(|l| {
                let used: BTreeMap<u32, ()> = self.codes.iter().map(|c| (c[l], ())).collect();
                (used.len(), self.sizes[l])
            })
            .collect()
    }
}

/// A JSON object read as (key, value) pairs in file order.
struct OrderedIndex(Vec<(String, Vec<String>)>);

impl<'de> serde::Deserialize<'de> for OrderedIndex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OrderedIndex;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object {\"item_id\": [\"<a_1>\", ...]}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<OrderedIndex, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Vec<String>>()? {
                    out.push((k, v));
                }
                Ok(OrderedIndex(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> SidTable {
        SidTable::new(
            vec!["10".into(), "20".into(), "30".into()],
            vec![vec![0, 1, 2], vec![0, 1, 3], vec![1, 0, 0]],
            vec![2, 2, 4],
        )
        .unwrap()
    }

    #[test]
    fn tokens_and_lookup() {
        let t = table();
        assert_eq!(t.sid_string(1), "<a_0><b_1><c_3>");
        assert_eq!(t.items_of_sid("<a_0><b_1><c_3>"), &[1]);
        assert!(t.items_of_sid("<a_0><b_1>").is_empty());
        assert!(t.items_of_sid("garbage").is_empty());
        assert_eq!(t.all_tokens().len(), 8);
        assert_eq!(parse_level_token("<c_200>"), Some((2, 200)));
        assert_eq!(parse_level_token("<c_>"), None);
        assert!(t.is_bijection());
        assert_eq!(t.utilization(), vec![(2, 2), (2, 2), (3, 4)]);
    }

    #[test]
    fn collisions_are_sets() {
        let t = SidTable::new(
            vec!["a".into(), "b".into(), "c".into()],
            vec![vec![0, 1], vec![0, 1], vec![1, 1]],
            vec![],
        )
        .unwrap();
        assert!(!t.is_bijection());
        assert_eq!(t.items_with(&[0, 1]), &[0, 1]);
        assert!((t.collision_rate() - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn index_round_trips_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.index.json");
        let t = table();
        t.write_index(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"20\": [\"<a_0>\",\"<b_1>\",\"<c_3>\"]"));
        let back = SidTable::read_index(&p).unwrap();
        assert_eq!(back.items(), t.items());
        for i in 0..t.len() {
            assert_eq!(back.codes(i), t.codes(i));
        }
        // Reversed key order in the file is kept.
        let rev = SidTable::parse_index(r#"{"b": ["<a_1>"], "a": ["<a_0>"]}"#).unwrap();
        assert_eq!(rev.items(), &["b".to_string(), "a".to_string()]);
    }

    #[test]
    fn bad_input_is_named() {
        let e = SidTable::parse_index(r#"{"x": ["<b_1>", "<a_1>"]}"#).unwrap_err();
        assert!(format!("{e:#}").contains("item `x`"), "{e:#}");
        let e = SidTable::parse_index(r#"{"x": ["<a_1>"], "y": ["<a_1>", "<b_2>"]}"#).unwrap_err();
        assert!(format!("{e:#}").contains("`y`"), "{e:#}");
        assert!(SidTable::parse_index("[1,2]").is_err());
    }
}
