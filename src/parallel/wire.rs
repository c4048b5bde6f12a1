//! A small byte format for what ranks exchange (completions, scores, metric sums): integers
//! little-endian, floats as their bits (so NaN and ±inf survive, and a value arrives
//! bit-for-bit), strings and JSON as length-prefixed bytes.

use anyhow::{ensure, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Default)]
pub struct Writer(Vec<u8>);

impl Writer {
    pub fn u64(&mut self, x: u64) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    pub fn f64(&mut self, x: f64) {
        self.u64(x.to_bits());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    pub fn u32s(&mut self, xs: &[u32]) {
        self.u64(xs.len() as u64);
        for x in xs {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
    }
    pub fn f32s(&mut self, xs: &[f32]) {
        self.u64(xs.len() as u64);
        for x in xs {
            self.0.extend_from_slice(&x.to_bits().to_le_bytes());
        }
    }
    pub fn json<T: Serialize>(&mut self, v: &T) -> Result<()> {
        self.bytes(&serde_json::to_vec(v)?);
        Ok(())
    }
    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        ensure!(
            self.buf.len() - self.pos >= n,
            "wire: message cut short ({} bytes left, {n} wanted)",
            self.buf.len() - self.pos
        );
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
    fn word(&mut self) -> Result<[u8; 4]> {
        Ok(self.take(4)?.try_into().expect("4 bytes"))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_bits(self.u64()?))
    }
    fn len(&mut self) -> Result<usize> {
        usize::try_from(self.u64()?).context("wire: length")
    }
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }
    pub fn str(&mut self) -> Result<String> {
        Ok(std::str::from_utf8(self.bytes()?)
            .context("wire: string")?
            .to_string())
    }
    pub fn u32s(&mut self) -> Result<Vec<u32>> {
        let n = self.len()?;
        (0..n)
            .map(|_| Ok(u32::from_le_bytes(self.word()?)))
            .collect()
    }
    pub fn f32s(&mut self) -> Result<Vec<f32>> {
        let n = self.len()?;
        (0..n)
            .map(|_| Ok(f32::from_bits(u32::from_le_bytes(self.word()?))))
            .collect()
    }
    pub fn json<T: DeserializeOwned>(&mut self) -> Result<T> {
        serde_json::from_slice(self.bytes()?).context("wire: json")
    }
    /// Every byte read (a longer message is a mismatch between writer and reader).
    pub fn finish(&self) -> Result<()> {
        ensure!(
            self.pos == self.buf.len(),
            "wire: {} bytes left unread",
            self.buf.len() - self.pos
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_back_bit_for_bit() {
        let mut w = Writer::default();
        w.u64(7);
        w.f32s(&[1.5, f32::NEG_INFINITY, f32::NAN, -0.0]);
        w.u32s(&[3, 4]);
        w.str("héllo");
        w.json(&vec![("a", 1)]).unwrap();
        w.f64(0.1);
        let b = w.finish();
        let mut r = Reader::new(&b);
        assert_eq!(r.u64().unwrap(), 7);
        let f = r.f32s().unwrap();
        assert_eq!(f[0], 1.5);
        assert_eq!(f[1], f32::NEG_INFINITY);
        assert!(f[2].is_nan());
        assert_eq!(f[3].to_bits(), (-0.0f32).to_bits());
        assert_eq!(r.u32s().unwrap(), [3, 4]);
        assert_eq!(r.str().unwrap(), "héllo");
        assert_eq!(r.json::<Vec<(String, i32)>>().unwrap(), [("a".into(), 1)]);
        assert_eq!(r.f64().unwrap(), 0.1);
        r.finish().unwrap();
        assert!(Reader::new(&b[..5]).u64().is_err());
    }
}
