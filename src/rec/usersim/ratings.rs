//! Explicit ratings for the simulator: a RecBole `.inter` file with a `rating` column, checked
//! against the rating scale, labelled liked (rating ≥ the threshold, 4 on MovieLens's 1–5), and
//! split per user in time order (each user's later ratings held out).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// What a rating means.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scale {
    pub min: f64,
    pub max: f64,
    /// A rating at or above this is a like.
    pub like_at: f64,
}

impl Default for Scale {
    fn default() -> Self {
        Self {
            min: 1.0,
            max: 5.0,
            like_at: 4.0,
        }
    }
}

impl Scale {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.min < self.max && self.like_at > self.min && self.like_at <= self.max,
            "rating scale {}..{} with likes from {}: need min < like threshold ≤ max",
            self.min,
            self.max,
            self.like_at
        );
        Ok(())
    }

    /// Whether `r` is on the scale; the error says so and how to change the scale.
    pub fn check(&self, r: f64) -> Result<()> {
        ensure!(
            r.is_finite() && r >= self.min && r <= self.max,
            "rating {r} is outside the scale {}..{}; hint: fix the data or pass \
             --rating-min/--rating-max",
            self.min,
            self.max
        );
        Ok(())
    }

    pub fn liked(&self, r: f64) -> bool {
        r >= self.like_at
    }
}

/// One rating.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rating {
    pub user: String,
    pub item: String,
    pub rating: f64,
    pub timestamp: f64,
}

/// Reads a RecBole `.inter` with `user_id`, `item_id`, `rating` and (optional) `timestamp`
/// columns; every rating must be on `scale` (the error names the row).
pub fn read_ratings(path: &Path, scale: &Scale) -> Result<Vec<Rating>> {
    scale.validate()?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading ratings {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split('\t')
        .map(|h| h.split(':').next().unwrap_or("").trim().to_string())
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let (Some(u), Some(i)) = (col("user_id"), col("item_id")) else {
        bail!("{}: needs `user_id` and `item_id` columns", path.display());
    };
    let Some(r) = col("rating") else {
        bail!(
            "{}: no `rating` column; the simulator learns likes from explicit ratings",
            path.display()
        );
    };
    let t = col("timestamp");
    let mut out = Vec::new();
    for (k, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row = k + 2;
        let cols: Vec<&str> = line.split('\t').collect();
        ensure!(
            cols.len() == header.len(),
            "{} row {row}: {} columns, the header has {}",
            path.display(),
            cols.len(),
            header.len()
        );
        let num = |c: usize, what: &str| -> Result<f64> {
            cols[c].trim().parse().map_err(|_| {
                anyhow::anyhow!(
                    "{} row {row}: {what} `{}` is not a number",
                    path.display(),
                    cols[c]
                )
            })
        };
        let rating = num(r, "rating")?;
        scale
            .check(rating)
            .with_context(|| format!("{} row {row}", path.display()))?;
        out.push(Rating {
            user: cols[u].trim().to_string(),
            item: cols[i].trim().to_string(),
            rating,
            timestamp: t
                .map(|t| num(t, "timestamp"))
                .transpose()?
                .unwrap_or(k as f64),
        });
    }
    ensure!(!out.is_empty(), "{} holds no ratings", path.display());
    Ok(out)
}

/// Each user's ratings in time order (ties keep file order), users in id order.
pub fn by_user(ratings: &[Rating]) -> BTreeMap<String, Vec<Rating>> {
    let mut m: BTreeMap<String, Vec<Rating>> = BTreeMap::new();
    for r in ratings {
        m.entry(r.user.clone()).or_default().push(r.clone());
    }
    for v in m.values_mut() {
        v.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
    }
    m
}

/// Per-user time split: the last `test_frac` of each user's ratings are test, the
/// `valid_frac` before them valid, the rest train (each held-out part at least one rating when
/// the user has at least 3; users with fewer are all train).
#[derive(Clone, Debug, Default)]
pub struct RatingSplit {
    pub train: Vec<Rating>,
    pub valid: Vec<Rating>,
    pub test: Vec<Rating>,
}

pub fn split(ratings: &[Rating], valid_frac: f64, test_frac: f64) -> Result<RatingSplit> {
    ensure!(
        (0.0..1.0).contains(&valid_frac)
            && (0.0..1.0).contains(&test_frac)
            && valid_frac + test_frac < 1.0,
        "valid and test fractions must be in [0, 1) and sum below 1"
    );
    let mut s = RatingSplit::default();
    for (_, v) in by_user(ratings) {
        let n = v.len();
        let (nt, nv) = if n < 3 {
            (0, 0)
        } else {
            let t = ((n as f64 * test_frac).round() as usize).max(usize::from(test_frac > 0.0));
            let va = ((n as f64 * valid_frac).round() as usize).max(usize::from(valid_frac > 0.0));
            (t, va)
        };
        let (head, test) = v.split_at(n - nt);
        let (train, valid) = head.split_at(head.len() - nv);
        s.train.extend_from_slice(train);
        s.valid.extend_from_slice(valid);
        s.test.extend_from_slice(test);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, body: &str) -> std::path::PathBuf {
        let p = dir.join("x.inter");
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn ratings_are_read_labelled_and_checked_against_the_scale() {
        let d = tempfile::tempdir().unwrap();
        let h = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n";
        let p = write(d.path(), &format!("{h}1\t10\t4\t5\n1\t11\t2\t6\n"));
        let r = read_ratings(&p, &Scale::default()).unwrap();
        assert_eq!(r.len(), 2);
        assert!(Scale::default().liked(r[0].rating) && !Scale::default().liked(r[1].rating));
        let p = write(d.path(), &format!("{h}1\t10\t7\t5\n"));
        let e = format!("{:#}", read_ratings(&p, &Scale::default()).unwrap_err());
        assert!(
            e.contains("row 2") && e.contains("outside the scale 1..5"),
            "{e}"
        );
        let p = write(d.path(), "user_id:token\titem_id:token\n1\t2\n");
        assert!(
            format!("{:#}", read_ratings(&p, &Scale::default()).unwrap_err())
                .contains("no `rating` column")
        );
    }

    #[test]
    fn the_split_holds_out_each_users_latest_ratings() {
        let r: Vec<Rating> = (0..10)
            .map(|t| Rating {
                user: "u".into(),
                item: t.to_string(),
                rating: 3.0,
                timestamp: (10 - t) as f64, // file order reversed in time
            })
            .collect();
        let s = split(&r, 0.1, 0.2).unwrap();
        assert_eq!((s.train.len(), s.valid.len(), s.test.len()), (7, 1, 2));
        // The test part is the latest in time: items 1 and 0.
        assert_eq!(
            s.test.iter().map(|x| x.item.as_str()).collect::<Vec<_>>(),
            ["1", "0"]
        );
        assert_eq!(s.valid[0].item, "2");
    }
}
