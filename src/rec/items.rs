//! The item catalogue: item id → the text an item embedding is computed from.
//!
//! Two sources:
//! - a RecBole `.item` file (tab-separated, `name:type` header, e.g. MovieLens-100K's
//!   `item_id:token  movie_title:token_seq  release_year:token  class:token_seq`);
//! - MiniOneRec's item-metadata JSON, `{"id": {"title", "description", "brand", "categories"}}`,
//!   where `description` and `categories` may be strings, lists, or stringified Python lists.
//!
//! # The text template (exact; the embeddings and their cache key depend on it)
//!
//! An item's text is its non-empty parts joined by `"; "`, in this order:
//!
//! 1. the title, unlabelled;
//! 2. `year: {year}`;
//! 3. `genres: {g1}, {g2}, ...`;
//! 4. `brand: {brand}`;
//! 5. `categories: {c1}, {c2}, ...`;
//! 6. `description: {description}` — last, so that truncation to the encoder's 256 word pieces
//!    cuts the description and never the title, brand or categories.
//!
//! e.g. `Toy Story; year: 1995; genres: Animation, Children's, Comedy`. Every value has its runs
//! of whitespace (newlines included) collapsed to one space and is trimmed; list values
//! (RecBole `token_seq` genres/categories, JSON lists, stringified Python lists, nested lists as
//! Amazon's categories are) are flattened in order, duplicates after the first dropped, and
//! joined with `", "` (a description's pieces with `" "`).
//!
//! Which columns feed which part (`.item`; the first present column of each list wins):
//! title: `title`, `movie_title`, `item_title`, `book_title`, `name` (required; the raw value,
//! a title's `token_seq` words are not split); year: `release_year`, `year`; genres: `class`,
//! `genre`, `genres`; brand: `brand`; categories: `categories`, `category`; description:
//! `description`. Other columns (prices, sales ranks, ...) are not text and are left out; the
//! catalogue lists them in [`Catalogue::ignored`]. In the JSON, the keys `title`, `brand`,
//! `categories` and `description`; other keys are ignored likewise.
//!
//! Rows keep the file's order (the JSON's key order too), which is the row order of the
//! embeddings written from a catalogue. Errors name the file and the row (1-based line numbers,
//! header = line 1) or the JSON entry.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::atomic::AtomicFile;
use super::minionerec_csv::parse_py_list;

/// The labelled parts after the title, in template order.
pub const PARTS: [&str; 5] = ["year", "genres", "brand", "categories", "description"];

/// `.item` columns that may hold the title, in order of preference.
const TITLE_COLUMNS: [&str; 5] = ["title", "movie_title", "item_title", "book_title", "name"];

/// `.item` columns for each of [`PARTS`], in order of preference.
const PART_COLUMNS: [&[&str]; 5] = [
    &["release_year", "year"],
    &["class", "genre", "genres"],
    &["brand"],
    &["categories", "category"],
    &["description"],
];

/// One item: its raw id and the text fields the template uses.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Item {
    pub id: String,
    /// Whitespace-normalized title ("" when the item has none).
    pub title: String,
    /// `(part, value)` for the non-empty [`PARTS`], in template order.
    pub parts: Vec<(&'static str, String)>,
}

impl Item {
    /// The text the encoder sees (the template in the module docs).
    pub fn text(&self) -> String {
        let mut pieces: Vec<String> = Vec::with_capacity(1 + self.parts.len());
        if !self.title.is_empty() {
            pieces.push(self.title.clone());
        }
        for (label, value) in &self.parts {
            pieces.push(format!("{label}: {value}"));
        }
        pieces.join("; ")
    }
}

/// The items of one file, in file order, ids unique.
#[derive(Clone, Debug, Default)]
pub struct Catalogue {
    pub source: PathBuf,
    pub items: Vec<Item>,
    /// Columns (or JSON keys) present in the file that feed no part of the text.
    pub ignored: Vec<String>,
}

impl Catalogue {
    /// Reads a RecBole `.item` file (by extension) or an item-metadata JSON (anything else).
    pub fn read(path: &Path) -> Result<Self> {
        if path.extension().is_some_and(|e| e == "item") {
            read_atomic(path)
        } else {
            read_meta_json(path)
        }
    }

    pub fn ids(&self) -> Vec<String> {
        self.items.iter().map(|i| i.id.clone()).collect()
    }

    pub fn texts(&self) -> Vec<String> {
        self.items.iter().map(Item::text).collect()
    }
}

/// Runs of whitespace → one space, trimmed.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Squashed, non-empty, first occurrences only, joined with `sep`.
fn join_unique<'a>(values: impl IntoIterator<Item = &'a str>, sep: &str) -> String {
    let mut seen = Vec::<String>::new();
    for v in values {
        let v = squash(v);
        if !v.is_empty() && !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen.join(sep)
}

// ------------------------------------------------------------------------------------------------
// RecBole .item

fn read_atomic(path: &Path) -> Result<Catalogue> {
    let file = AtomicFile::read(path, "items")?;
    let header = &file.header;
    let names = file.names();
    let find = |cands: &[&str]| file.find(cands);
    let id_col = file.column("item_id", "item_id:token\\tmovie_title:token_seq\\t...")?;
    let title_col = find(&TITLE_COLUMNS).with_context(|| {
        format!(
            "{}: no title column in the header (found {names:?}); the item text needs one of \
             {TITLE_COLUMNS:?}",
            path.display()
        )
    })?;
    let part_cols: Vec<Option<usize>> = PART_COLUMNS.iter().map(|c| find(c)).collect();
    let used: Vec<usize> = [id_col, title_col]
        .into_iter()
        .chain(part_cols.iter().flatten().copied())
        .collect();
    let ignored = (0..header.len())
        .filter(|c| !used.contains(c))
        .map(|c| header[c].0.clone())
        .collect();

    let mut items = Vec::new();
    let mut rows: HashMap<String, usize> = HashMap::new();
    for r in file.rows() {
        let (row, cols) = r?;
        let id = cols[id_col].trim().to_string();
        ensure!(
            !id.is_empty(),
            "{} row {row}: empty item_id",
            path.display()
        );
        if let Some(first) = rows.insert(id.clone(), row) {
            bail!(
                "{} row {row}: item `{id}` again (first at row {first}); item ids must be unique",
                path.display()
            );
        }
        let parts = PARTS
            .iter()
            .zip(&part_cols)
            .filter_map(|(&label, col)| {
                let c = (*col)?;
                let raw = cols[c];
                // RecBole's `token_seq` is space-separated; genres and categories become a list.
                let v = if header[c].1 == "token_seq" && label != "description" {
                    join_unique(raw.split_whitespace(), ", ")
                } else {
                    squash(raw)
                };
                (!v.is_empty()).then_some((label, v))
            })
            .collect();
        items.push(Item {
            id,
            title: squash(cols[title_col]),
            parts,
        });
    }
    ensure!(!items.is_empty(), "{}: no items", path.display());
    Ok(Catalogue {
        source: path.to_path_buf(),
        items,
        ignored,
    })
}

// ------------------------------------------------------------------------------------------------
// MiniOneRec item-metadata JSON

/// A JSON object's entries in file order (serde_json's `preserve_order` is off crate-wide), so
/// rows follow the file; a repeated key is kept twice and refused by the caller.
struct Ordered(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object keyed by item id")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(e) = m.next_entry::<String, Value>()? {
                    out.push(e);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The text pieces of one metadata value: a string (a stringified Python list is unpacked), a
/// number, or a (nested) list of those; `null` is nothing.
fn pieces(v: &Value, out: &mut Vec<String>) -> Result<(), String> {
    match v {
        Value::Null => {}
        Value::String(s) => {
            let t = s.trim();
            match t.starts_with('[').then(|| parse_py_list(t)) {
                Some(Ok(list)) => out.extend(list),
                // Not a list after all (a description may start with `[`): the text as written.
                _ => out.push(s.clone()),
            }
        }
        Value::Number(n) => out.push(n.to_string()),
        Value::Bool(b) => out.push(b.to_string()),
        Value::Array(a) => {
            for x in a {
                pieces(x, out)?;
            }
        }
        Value::Object(_) => return Err("an object, expected a string or a list".into()),
    }
    Ok(())
}

fn read_meta_json(path: &Path) -> Result<Catalogue> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading item metadata {}", path.display()))?;
    let Ordered(entries) = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected {{\"item_id\": {{\"title\": ..., \"description\": ..., \"brand\": ..., \
             \"categories\": ...}}}} (or give a RecBole file ending in .item)",
            path.display()
        )
    })?;
    let mut items = Vec::new();
    let mut ignored: Vec<String> = Vec::new();
    let mut rows: HashMap<String, usize> = HashMap::new();
    for (k, (id, v)) in entries.into_iter().enumerate() {
        let at = || format!("{}: item `{id}` (entry {})", path.display(), k + 1);
        if let Some(first) = rows.insert(id.clone(), k + 1) {
            bail!("{}: the key appears again (first at entry {first})", at());
        }
        let Value::Object(fields) = v else {
            bail!(
                "{}: expected an object {{\"title\": ..., ...}}, found {v}",
                at()
            );
        };
        for key in fields.keys() {
            let known = ["title", "brand", "categories", "description"].contains(&key.as_str());
            if !known && !ignored.contains(key) {
                ignored.push(key.clone());
            }
        }
        let field = |name: &str| -> Result<Vec<String>> {
            let mut out = Vec::new();
            if let Some(v) = fields.get(name) {
                pieces(v, &mut out).map_err(|e| anyhow::anyhow!("{}: `{name}` is {e}", at()))?;
            }
            Ok(out)
        };
        let title = join_unique(field("title")?.iter().map(String::as_str), " ");
        let mut parts = Vec::new();
        for (label, sep) in [("brand", ", "), ("categories", ", "), ("description", " ")] {
            let v = field(label)?;
            // The description's pieces are sentences: keep repeats, only squash each.
            let v = if label == "description" {
                squash(&v.join(" "))
            } else {
                join_unique(v.iter().map(String::as_str), sep)
            };
            if !v.is_empty() {
                parts.push((label, v));
            }
        }
        items.push(Item { id, title, parts });
    }
    ensure!(!items.is_empty(), "{}: no items", path.display());
    ignored.sort();
    Ok(Catalogue {
        source: path.to_path_buf(),
        items,
        ignored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn movielens_rows_follow_the_template() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "ml.item",
            "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n\
             1\tToy Story\t1995\tAnimation Children's Comedy\n\
             2\tGoldenEye\t\tAction  Adventure\n\
             \n\
             10\t  Richard   III \t1995\tDrama War\n",
        );
        let c = Catalogue::read(&p).unwrap();
        assert_eq!(c.ids(), ["1", "2", "10"]);
        assert_eq!(
            c.texts(),
            [
                "Toy Story; year: 1995; genres: Animation, Children's, Comedy",
                "GoldenEye; genres: Action, Adventure",
                "Richard III; year: 1995; genres: Drama, War",
            ]
        );
        assert!(c.ignored.is_empty());
    }

    #[test]
    fn other_columns_are_listed_as_ignored_and_descriptions_come_last() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "a.item",
            "item_id:token\tdescription:token_seq\ttitle:token\tprice:float\tbrand:token\t\
             categories:token_seq\n\
             B1\tA fine  pen.\tPen\t3.5\tAcme\tOffice Pens Office\n",
        );
        let c = Catalogue::read(&p).unwrap();
        assert_eq!(
            c.texts(),
            ["Pen; brand: Acme; categories: Office, Pens; description: A fine pen."]
        );
        assert_eq!(c.ignored, ["price"]);
    }

    #[test]
    fn item_file_errors_name_file_and_row() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "bad.item",
            "item_id:token\tmovie_title:token_seq\n1\tA\n2\tB\textra\n",
        );
        let e = format!("{:#}", Catalogue::read(&p).unwrap_err());
        assert!(
            e.contains("bad.item row 3") && e.contains("3 columns"),
            "{e}"
        );
        let p = write(
            d.path(),
            "dup.item",
            "item_id:token\ttitle:token\n1\tA\n1\tB\n",
        );
        let e = format!("{:#}", Catalogue::read(&p).unwrap_err());
        assert!(
            e.contains("dup.item row 3") && e.contains("first at row 2"),
            "{e}"
        );
        let p = write(
            d.path(),
            "nt.item",
            "item_id:token\tclass:token_seq\n1\tA\n",
        );
        let e = format!("{:#}", Catalogue::read(&p).unwrap_err());
        assert!(
            e.contains("no title column") && e.contains("movie_title"),
            "{e}"
        );
    }

    #[test]
    fn metadata_json_keeps_file_order_and_unpacks_stringified_lists() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "x.item.json",
            r#"{
              "10": {"title": "Stapler", "brand": "Acme",
                     "categories": [["Office", "Staplers"], ["Office"]],
                     "description": "['Heavy duty.', 'Holds 20 sheets.']", "price": 3},
              "2": {"title": " Pen\n", "description": "[Draft] a \"pen\"", "categories": "['A', 'B']"},
              "3": {"title": "Café ☕", "description": [], "brand": null}
            }"#,
        );
        let c = Catalogue::read(&p).unwrap();
        assert_eq!(c.ids(), ["10", "2", "3"]);
        assert_eq!(
            c.texts(),
            [
                "Stapler; brand: Acme; categories: Office, Staplers; \
                 description: Heavy duty. Holds 20 sheets.",
                "Pen; categories: A, B; description: [Draft] a \"pen\"",
                "Café ☕",
            ]
        );
        assert_eq!(c.ignored, ["price"]);
    }

    #[test]
    fn metadata_json_errors_name_the_entry() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "m.json", r#"{"a": {"title": "A"}, "b": 3}"#);
        let e = format!("{:#}", Catalogue::read(&p).unwrap_err());
        assert!(e.contains("m.json: item `b` (entry 2)"), "{e}");
        let p = write(d.path(), "n.json", r#"{"a": {"title": {"x": 1}}}"#);
        let e = format!("{:#}", Catalogue::read(&p).unwrap_err());
        assert!(
            e.contains("item `a` (entry 1)") && e.contains("`title`"),
            "{e}"
        );
        let p = write(
            d.path(),
            "d.json",
            r#"{"a": {"title": "A"}, "a": {"title": "B"}}"#,
        );
        let e = format!("{:#}", Catalogue::read(&p).unwrap_err());
        assert!(e.contains("appears again (first at entry 1)"), "{e}");
        let p = write(d.path(), "l.json", r#"[1, 2]"#);
        let e = format!("{:#}", Catalogue::read(&p).unwrap_err());
        assert!(e.contains("l.json: expected {\"item_id\""), "{e}");
    }
}
