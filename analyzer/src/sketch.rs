//! A mergeable latency sketch with relative error guarantees (the DDSketch idea): values fall
//! into logarithmic buckets, so any quantile is within 1% of the true value, and sketches from
//! different time buckets or shards merge by adding counts.

/// Relative accuracy of quantiles.
const ALPHA: f64 = 0.01;

fn gamma_ln() -> f64 {
    ((1.0 + ALPHA) / (1.0 - ALPHA)).ln()
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencySketch {
    /// Bucket index of `counts[0]`.
    offset: i32,
    counts: Vec<u64>,
    /// Values under 1 ns (zero durations are common in coarse clocks).
    zeros: u64,
    count: u64,
    max_ns: i64,
}

impl LatencySketch {
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max_ns(&self) -> i64 {
        self.max_ns
    }

    pub fn add(&mut self, nanos: i64) {
        self.count += 1;
        self.max_ns = self.max_ns.max(nanos);
        if nanos < 1 {
            self.zeros += 1;
            return;
        }
        let index = ((nanos as f64).ln() / gamma_ln()).ceil() as i32;
        self.add_to_bucket(index, 1);
    }

    fn add_to_bucket(&mut self, index: i32, n: u64) {
        self.cover(index, index);
        self.counts[(index - self.offset) as usize] += n;
    }

    /// Grows the buckets, at most once at each end, to hold indexes `low..=high`: merging a
    /// sketch then adds in place instead of shifting the buckets for each lower one.
    fn cover(&mut self, low: i32, high: i32) {
        if self.counts.is_empty() {
            self.offset = low;
        }
        if low < self.offset {
            let grow = (self.offset - low) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = low;
        }
        let end = (high - self.offset) as usize + 1;
        if end > self.counts.len() {
            self.counts.resize(end, 0);
        }
    }

    pub fn merge(&mut self, other: &LatencySketch) {
        self.count += other.count;
        self.zeros += other.zeros;
        self.max_ns = self.max_ns.max(other.max_ns);
        if other.counts.is_empty() {
            return;
        }
        self.cover(other.offset, other.offset + other.counts.len() as i32 - 1);
        let start = (other.offset - self.offset) as usize;
        for (mine, n) in self.counts[start..].iter_mut().zip(&other.counts) {
            *mine += n;
        }
    }

    /// The q-quantile in nanoseconds (within 1%), `None` when empty.
    pub fn quantile_ns(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (self.count - 1) as f64).round() as u64;
        if rank < self.zeros {
            return Some(0.0);
        }
        let mut seen = self.zeros;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen > rank {
                let value = bucket_value(self.offset + i as i32);
                return Some(value.min(self.max_ns as f64));
            }
        }
        Some(self.max_ns as f64)
    }

    /// A compact binary form for storage: varints of offset, zeros, count, max, then the counts.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.counts.len() * 2);
        write_varint(&mut out, zigzag(i64::from(self.offset)));
        write_varint(&mut out, self.zeros);
        write_varint(&mut out, self.count);
        write_varint(&mut out, zigzag(self.max_ns));
        write_varint(&mut out, self.counts.len() as u64);
        for n in &self.counts {
            write_varint(&mut out, *n);
        }
        out
    }

    /// Merges a sketch in its stored form without building it first (reading a week of
    /// buckets merges hundreds of thousands). Returns false, merging nothing, when the bytes
    /// are not a sketch.
    pub fn merge_bytes(&mut self, bytes: &[u8]) -> bool {
        let mut input = bytes;
        let header = (|| {
            let offset = i32::try_from(unzigzag(read_varint(&mut input)?)).ok()?;
            let zeros = read_varint(&mut input)?;
            let count = read_varint(&mut input)?;
            let max_ns = unzigzag(read_varint(&mut input)?);
            let len = usize::try_from(read_varint(&mut input)?).ok()?;
            (len <= input.len()).then_some((offset, zeros, count, max_ns, len))
        })();
        let Some((offset, zeros, count, max_ns, len)) = header else {
            return false;
        };
        if i32::try_from(len)
            .ok()
            .and_then(|len| offset.checked_add(len))
            .is_none()
        {
            return false;
        }
        // Validate the counts before changing anything.
        let mut counts = input;
        for _ in 0..len {
            if read_varint(&mut counts).is_none() {
                return false;
            }
        }
        if !counts.is_empty() {
            return false;
        }
        self.count += count;
        self.zeros += zeros;
        self.max_ns = self.max_ns.max(max_ns);
        if len == 0 {
            return true;
        }
        self.cover(offset, offset + len as i32 - 1);
        let start = (offset - self.offset) as usize;
        for mine in &mut self.counts[start..start + len] {
            *mine += read_varint(&mut input).expect("validated above");
        }
        true
    }

    /// The densest range of `width` adjacent buckets (each about 2% wide): the value of its
    /// lowest bucket's midpoint and the values in the range. `None` when empty.
    pub fn pile_up(&self, width: usize) -> Option<(f64, u64)> {
        let width = width.max(1);
        let mut best: Option<(usize, u64)> = None;
        for start in 0..self.counts.len() {
            let end = (start + width).min(self.counts.len());
            let in_range: u64 = self.counts[start..end].iter().sum();
            if in_range > best.map_or(0, |(_, n)| n) {
                best = Some((start, in_range));
            }
        }
        let (start, in_range) = best?;
        // The lowest non-empty bucket of the range: where the pile-up begins.
        let first = (start..start + width)
            .find(|&i| self.counts.get(i).is_some_and(|n| *n > 0))
            .unwrap_or(start);
        Some((bucket_value(self.offset + first as i32), in_range))
    }

    /// The values of `self` that are not in `part` (a sketch of some of the same values):
    /// counts subtracted bucket by bucket; the maximum stays `self`'s.
    pub fn without(&self, part: &LatencySketch) -> LatencySketch {
        let mut rest = LatencySketch {
            max_ns: self.max_ns,
            ..LatencySketch::default()
        };
        rest.zeros = self.zeros.saturating_sub(part.zeros);
        rest.count = rest.zeros;
        for (i, n) in self.counts.iter().enumerate() {
            let index = self.offset + i as i32;
            let removed = index
                .checked_sub(part.offset)
                .and_then(|j| usize::try_from(j).ok())
                .and_then(|j| part.counts.get(j))
                .copied()
                .unwrap_or(0);
            let left = n.saturating_sub(removed);
            if left > 0 {
                rest.count += left;
                rest.add_to_bucket(index, left);
            }
        }
        rest
    }

    /// Values under 1 ns.
    pub fn zeros(&self) -> u64 {
        self.zeros
    }

    /// The non-empty buckets as (bucket index, count): bucket boundaries are fixed, so sketches
    /// kept this way sum per index anywhere, in SQL (ClickHouse's `sumMap`) as well as here.
    pub fn buckets(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (self.offset + i as i32, *n))
    }

    /// The sketch of [`LatencySketch::zeros`], [`LatencySketch::max_ns`] and
    /// [`LatencySketch::buckets`]; `None` when the parts cannot be a sketch (an index beyond
    /// the range of durations).
    pub fn from_buckets(
        zeros: u64,
        max_ns: i64,
        buckets: impl IntoIterator<Item = (i32, u64)>,
    ) -> Option<LatencySketch> {
        // ln(i64::MAX) / gamma_ln() is under 2,200: anything far beyond is not ours.
        const INDEX_RANGE: std::ops::RangeInclusive<i32> = -4_000..=4_000;
        let mut sketch = LatencySketch {
            zeros,
            count: zeros,
            max_ns,
            ..LatencySketch::default()
        };
        for (index, n) in buckets {
            if !INDEX_RANGE.contains(&index) {
                return None;
            }
            if n > 0 {
                sketch.count += n;
                sketch.add_to_bucket(index, n);
            }
        }
        Some(sketch)
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<LatencySketch> {
        let mut input = bytes;
        let offset = i32::try_from(unzigzag(read_varint(&mut input)?)).ok()?;
        let zeros = read_varint(&mut input)?;
        let count = read_varint(&mut input)?;
        let max_ns = unzigzag(read_varint(&mut input)?);
        let len = usize::try_from(read_varint(&mut input)?).ok()?;
        if len > input.len() {
            return None;
        }
        let counts = (0..len)
            .map(|_| read_varint(&mut input))
            .collect::<Option<Vec<_>>>()?;
        input.is_empty().then_some(LatencySketch {
            offset,
            counts,
            zeros,
            count,
            max_ns,
        })
    }
}

/// A bucket's midpoint in relative terms: within ALPHA of every value in it.
fn bucket_value(index: i32) -> f64 {
    let gamma = gamma_ln().exp();
    2.0 * gamma.powi(index) / (gamma + 1.0)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Serialized as its storage form, so that state saved with serde and the store agree.
impl serde::Serialize for LatencySketch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> serde::Deserialize<'de> for LatencySketch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = <Vec<u8> as serde::Deserialize>::deserialize(deserializer)?;
        LatencySketch::from_bytes(&bytes)
            .ok_or_else(|| serde::de::Error::custom("not a latency sketch"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pile_up_is_the_densest_narrow_range_and_where_it_begins() {
        let mut sketch = LatencySketch::default();
        // Calls cut at 2 s (2.000–2.040 s), and a few spread out below.
        for extra in 0..12 {
            sketch.add(2_000_000_000 + extra * 3_000_000);
        }
        for ms in [5, 40, 300, 900] {
            sketch.add(ms * 1_000_000);
        }
        let (value, count) = sketch.pile_up(3).unwrap();
        assert_eq!(count, 12);
        assert!((value / 2e9 - 1.0).abs() < 0.02, "{value}");
        assert_eq!(LatencySketch::default().pile_up(3), None);
    }

    use super::*;

    #[test]
    fn buckets_and_zeros_rebuild_the_same_sketch() {
        let mut sketch = LatencySketch::default();
        for nanos in [0, 0, 5, 1_000, 1_010, 2_000_000, 7_500_000_000] {
            sketch.add(nanos);
        }
        let rebuilt =
            LatencySketch::from_buckets(sketch.zeros(), sketch.max_ns(), sketch.buckets()).unwrap();
        assert_eq!(rebuilt, sketch);
        assert_eq!(rebuilt.count(), 7);
        assert_eq!(sketch.zeros(), 2);
        // Summing two sketches' buckets per index, as SQL does, equals merging them.
        let mut other = LatencySketch::default();
        other.add(1_000);
        other.add(90);
        let mut summed: std::collections::BTreeMap<i32, u64> = sketch.buckets().collect();
        for (index, n) in other.buckets() {
            *summed.entry(index).or_default() += n;
        }
        let mut merged = sketch.clone();
        merged.merge(&other);
        assert_eq!(
            LatencySketch::from_buckets(2, merged.max_ns(), summed).unwrap(),
            merged
        );
        assert!(LatencySketch::from_buckets(0, 1, [(i32::MAX, 1)]).is_none());
    }

    #[test]
    fn merging_stored_bytes_equals_merging_the_sketch() {
        let (mut a, mut b) = (LatencySketch::default(), LatencySketch::default());
        for v in [0, 5, 1_000, 20_000, 3_000_000] {
            a.add(v);
        }
        for v in [7, 900, 40_000_000] {
            b.add(v);
        }
        let mut by_value = a.clone();
        by_value.merge(&b);
        let mut by_bytes = a.clone();
        assert!(by_bytes.merge_bytes(&b.to_bytes()));
        assert_eq!(by_bytes, by_value);
        let mut empty = LatencySketch::default();
        assert!(empty.merge_bytes(&b.to_bytes()));
        assert_eq!(empty, b);
        let before = a.clone();
        assert!(!a.merge_bytes(&[1, 2, 3]));
        assert!(!a.merge_bytes(&b.to_bytes()[..4]));
        assert_eq!(a, before, "bad bytes change nothing");
    }

    fn exact_quantile(sorted: &[i64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).round() as usize] as f64
    }

    #[test]
    fn quantiles_are_within_one_percent() {
        // A long-tailed spread of latencies from 1 µs to 10 s.
        let mut values: Vec<i64> = (1..=10_000)
            .map(|i| (i as f64).powf(2.5) as i64 * 1_000)
            .collect();
        let mut sketch = LatencySketch::default();
        for v in &values {
            sketch.add(*v);
        }
        values.sort();
        for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
            let exact = exact_quantile(&values, q);
            let estimate = sketch.quantile_ns(q).unwrap();
            assert!(
                (estimate - exact).abs() <= exact * 0.0101,
                "q={q}: {estimate} vs {exact}"
            );
        }
    }

    #[test]
    fn merging_equals_adding_everything_to_one_sketch() {
        let mut a = LatencySketch::default();
        let mut b = LatencySketch::default();
        let mut all = LatencySketch::default();
        for v in [0, 5, 1_000, 2_000_000, 7] {
            a.add(v);
            all.add(v);
        }
        for v in [3, 90_000_000_000, 1] {
            b.add(v);
            all.add(v);
        }
        a.merge(&b);
        assert_eq!(a.count(), all.count());
        for q in [0.1, 0.5, 0.9, 1.0] {
            assert_eq!(a.quantile_ns(q), all.quantile_ns(q));
        }
    }

    #[test]
    fn the_binary_form_round_trips_and_rejects_garbage() {
        let mut sketch = LatencySketch::default();
        for v in [0, 1, 10, 1_000_000, -5] {
            sketch.add(v);
        }
        assert_eq!(
            LatencySketch::from_bytes(&sketch.to_bytes()),
            Some(sketch.clone())
        );
        assert_eq!(LatencySketch::from_bytes(&[0xff, 0xff]), None);
        let mut trailing = sketch.to_bytes();
        trailing.push(0);
        assert_eq!(LatencySketch::from_bytes(&trailing), None);
    }

    #[test]
    fn an_empty_sketch_has_no_quantiles() {
        assert_eq!(LatencySketch::default().quantile_ns(0.5), None);
    }
}
