//! Counters that cost one byte each until they need more: each count is
//! kept as base-256 digits, digit `k` of every counter in plane `k`, and
//! plane `k` spans only the counters that ever carried into it. A
//! distribution's counters differ by orders of magnitude (the middle bins
//! of a latency sketch hold thousands, its tails a handful), so this costs
//! about a byte and a half per counter where `u64`s would cost eight.
//!
//! A set of counters is one byte string, exactly as long as it needs:
//! `[planes][lo, len as u16 LE, per plane][plane 0 digits][plane 1 digits]...`.
//! It lives in a [`Store`]: a box of its own ([`Counters`]), or its part of
//! a series' [`CounterBlock`], which keeps every set of a series in one
//! allocation (a dozen small allocations would cost their allocator
//! overhead a dozen times over). The common case, a count going up by one
//! in plane 0 without carrying, is an in-place increment; anything else (a
//! counter outside the planes, a carry) re-encodes the set, which happens a
//! few times in a counter's life.

const HEADER: usize = 4;
/// A u64 has eight base-256 digits.
const MAX_PLANES: usize = 8;

/// A plane while it is being rebuilt.
struct Plane {
    lo: u16,
    digits: Vec<u8>,
}

impl Plane {
    fn hi(&self) -> u16 {
        self.lo + self.digits.len() as u16 - 1
    }

    /// Makes the plane span `i`, with zeros for the counters it gains.
    fn cover(&mut self, i: u16) -> &mut u8 {
        if i < self.lo {
            let grow = usize::from(self.lo - i);
            self.digits.splice(0..0, std::iter::repeat_n(0, grow));
            self.lo = i;
        } else if i > self.hi() {
            self.digits.resize(usize::from(i - self.lo) + 1, 0);
        }
        &mut self.digits[usize::from(i - self.lo)]
    }
}

/// One set's encoding, read. Counter `i` is at index `i`; indices are u16.
#[derive(Clone, Copy, Debug)]
pub struct CountersRef<'a>(&'a [u8]);

impl<'a> CountersRef<'a> {
    fn planes(self) -> usize {
        self.0.first().map_or(0, |&p| usize::from(p))
    }

    /// (lo, len) of plane `k`.
    fn header(self, k: usize) -> (u16, usize) {
        let at = 1 + k * HEADER;
        let lo = u16::from_le_bytes([self.0[at], self.0[at + 1]]);
        let len = u16::from_le_bytes([self.0[at + 2], self.0[at + 3]]);
        (lo, usize::from(len))
    }

    /// (lo, digits) of every plane, lowest digit first.
    fn each_plane(self) -> impl Iterator<Item = (u16, &'a [u8])> {
        let planes = self.planes();
        let mut start = 1 + planes * HEADER;
        (0..planes).map(move |k| {
            let (lo, len) = self.header(k);
            let digits = &self.0[start..start + len];
            start += len;
            (lo, digits)
        })
    }

    fn decode(self) -> Vec<Plane> {
        self.each_plane()
            .map(|(lo, digits)| Plane {
                lo,
                digits: digits.to_vec(),
            })
            .collect()
    }

    /// The value of counter `i`.
    pub fn get(self, i: u16) -> u64 {
        self.each_plane()
            .enumerate()
            .filter(|(_, (lo, digits))| i >= *lo && usize::from(i - lo) < digits.len())
            .map(|(k, (lo, digits))| u64::from(digits[usize::from(i - lo)]) << (8 * k))
            .sum()
    }

    /// The first and last counter that ever counted: plane 0's span.
    pub fn span(self) -> Option<(u16, u16)> {
        (self.planes() > 0).then(|| {
            let (lo, len) = self.header(0);
            (lo, lo + len as u16 - 1)
        })
    }

    /// Every counter of the span, lowest first, as (index, value).
    pub fn iter(self) -> impl Iterator<Item = (u16, u64)> + 'a {
        let (lo, hi) = self.span().unwrap_or((1, 0));
        (lo..=hi).map(move |i| (i, self.get(i)))
    }

    /// The encoding of this set with plane `k` (a new one when `k` is the
    /// number of planes) made to span counter `i`, built in one allocation.
    fn covered(self, k: usize, i: u16) -> Vec<u8> {
        let planes = self.planes();
        let mut spans: Vec<(u16, usize)> = (0..planes).map(|j| self.header(j)).collect();
        let (before, after) = match spans.get(k) {
            Some(&(lo, _)) if i < lo => (usize::from(lo - i), 0),
            Some(&(lo, len)) => (0, usize::from(i - lo) + 1 - len),
            None => (0, 1),
        };
        let mut buf = Vec::with_capacity(self.0.len() + before + after + HEADER + 1);
        buf.push(planes.max(k + 1) as u8);
        if k == planes {
            spans.push((i, 0));
        }
        for (j, (lo, len)) in spans.iter().enumerate() {
            let (lo, len) = match j == k {
                true => (lo.min(&i), len + before + after),
                false => (lo, *len),
            };
            buf.extend_from_slice(&lo.to_le_bytes());
            buf.extend_from_slice(&(len as u16).to_le_bytes());
        }
        let mut start = 1 + planes * HEADER;
        for (j, (_, len)) in spans.iter().enumerate() {
            let digits = &self.0[start.min(self.0.len())..][..*len];
            start += len;
            if j == k {
                buf.resize(buf.len() + before, 0);
                buf.extend_from_slice(digits);
                buf.resize(buf.len() + after, 0);
            } else {
                buf.extend_from_slice(digits);
            }
        }
        buf
    }
}

fn encode(planes: &[Plane]) -> Vec<u8> {
    if planes.is_empty() {
        return Vec::new();
    }
    let len = 1 + planes.len() * HEADER + planes.iter().map(|p| p.digits.len()).sum::<usize>();
    let mut buf = Vec::with_capacity(len);
    buf.push(planes.len() as u8);
    for p in planes {
        buf.extend_from_slice(&p.lo.to_le_bytes());
        buf.extend_from_slice(&(p.digits.len() as u16).to_le_bytes());
    }
    for p in planes {
        buf.extend_from_slice(&p.digits);
    }
    buf
}

fn add_to(planes: &mut Vec<Plane>, i: u16, n: u64) {
    let mut carry = n;
    let mut k = 0;
    while carry > 0 {
        if k == planes.len() {
            debug_assert!(k < MAX_PLANES, "a count beyond u64");
            planes.push(Plane {
                lo: i,
                digits: vec![0],
            });
        }
        let digit = planes[k].cover(i);
        let sum = u64::from(*digit) + (carry & 0xff);
        *digit = sum as u8;
        carry = (carry >> 8) + (sum >> 8);
        k += 1;
    }
}

/// Adds one to counter `i` of the encoding `buf` when every plane it
/// carries into already spans it (nearly always, once a counter has counted
/// for a while); otherwise nothing changes and the plane that must grow is
/// named.
fn increment_in_place(buf: &mut [u8], i: u16) -> Result<(), usize> {
    let planes = CountersRef(buf).planes();
    let mut start = 1 + planes * HEADER;
    // The digits that wrap to 0, at most one per plane.
    let (mut wrapped, mut n) = ([0usize; MAX_PLANES], 0);
    for k in 0..planes {
        let (lo, len) = CountersRef(buf).header(k);
        if i < lo || usize::from(i - lo) >= len {
            return Err(k);
        }
        let digit = start + usize::from(i - lo);
        if buf[digit] < u8::MAX {
            for &d in &wrapped[..n] {
                buf[d] = 0;
            }
            buf[digit] += 1;
            return Ok(());
        }
        // 255: it becomes 0 and carries, if the next plane spans it.
        wrapped[n] = digit;
        n += 1;
        start += len;
    }
    Err(planes)
}

/// Where one set's encoding lives.
pub trait Store {
    fn bytes(&self) -> &[u8];
    fn bytes_mut(&mut self) -> &mut [u8];
    /// Replaces the encoding with a longer or shorter one.
    fn replace(&mut self, encoding: &[u8]);

    fn counters(&self) -> CountersRef<'_> {
        CountersRef(self.bytes())
    }

    /// Adds `n` to counter `i`.
    fn add(&mut self, i: u16, n: u64) {
        if n == 1 {
            // Grow the plane the count must carry into, then count.
            while let Err(k) = increment_in_place(self.bytes_mut(), i) {
                let grown = self.counters().covered(k, i);
                self.replace(&grown);
            }
            return;
        }
        let mut planes = self.counters().decode();
        add_to(&mut planes, i, n);
        self.replace(&encode(&planes));
    }

    /// Moves the counts of every counter below `floor` into `floor`.
    fn fold_below(&mut self, floor: u16) {
        let below: u64 = self
            .counters()
            .iter()
            .take_while(|(i, _)| *i < floor)
            .map(|(_, c)| c)
            .sum();
        if below == 0 {
            return;
        }
        let mut planes: Vec<Plane> = self
            .counters()
            .decode()
            .into_iter()
            .filter(|p| p.hi() >= floor)
            .map(|mut p| {
                if p.lo < floor {
                    p.digits.drain(..usize::from(floor - p.lo));
                    p.lo = floor;
                }
                p
            })
            .collect();
        add_to(&mut planes, floor, below);
        self.replace(&encode(&planes));
    }
}

/// One set of counters in a box of its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    buf: Box<[u8]>,
}

impl Store for Counters {
    fn bytes(&self) -> &[u8] {
        &self.buf
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
    fn replace(&mut self, encoding: &[u8]) {
        self.buf = encoding.into();
    }
}

impl Counters {
    /// A copy of a set kept elsewhere.
    pub fn copy_of(set: CountersRef<'_>) -> Self {
        Self { buf: set.0.into() }
    }

    pub fn span(&self) -> Option<(u16, u16)> {
        self.counters().span()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.counters().iter()
    }
}

/// `SETS` sets of counters in one allocation, exactly as long as they
/// need: each set's length (u16 LE), then the sets' encodings in order.
/// Growing a set re-encodes the block, a copy of a kilobyte or two a few
/// times in a set's life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterBlock<const SETS: usize> {
    /// Empty while every set is.
    buf: Box<[u8]>,
}

impl<const SETS: usize> Default for CounterBlock<SETS> {
    fn default() -> Self {
        Self {
            buf: Box::default(),
        }
    }
}

impl<const SETS: usize> CounterBlock<SETS> {
    const LENGTHS: usize = 2 * SETS;

    fn len_of(&self, set: usize) -> usize {
        usize::from(u16::from_le_bytes([
            self.buf[2 * set],
            self.buf[2 * set + 1],
        ]))
    }

    /// Where set `set`'s encoding is in the block.
    fn range(&self, set: usize) -> std::ops::Range<usize> {
        if self.buf.is_empty() {
            return 0..0;
        }
        let start = Self::LENGTHS + (0..set).map(|s| self.len_of(s)).sum::<usize>();
        start..start + self.len_of(set)
    }

    pub fn set(&self, set: usize) -> CountersRef<'_> {
        CountersRef(&self.buf[self.range(set)])
    }

    pub fn set_mut(&mut self, set: usize) -> BlockSet<'_, SETS> {
        BlockSet { block: self, set }
    }

    /// Bytes on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.buf.len()
    }
}

/// One set of a [`CounterBlock`], to count in.
pub struct BlockSet<'b, const SETS: usize> {
    block: &'b mut CounterBlock<SETS>,
    set: usize,
}

impl<const SETS: usize> Store for BlockSet<'_, SETS> {
    fn bytes(&self) -> &[u8] {
        &self.block.buf[self.block.range(self.set)]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let range = self.block.range(self.set);
        &mut self.block.buf[range]
    }

    fn replace(&mut self, encoding: &[u8]) {
        let old = &self.block.buf;
        let range = self.block.range(self.set);
        let lengths = CounterBlock::<SETS>::LENGTHS;
        let mut buf = Vec::with_capacity(old.len().max(lengths) - range.len() + encoding.len());
        if old.is_empty() {
            buf.resize(lengths, 0);
        } else {
            buf.extend_from_slice(&old[..range.start]);
        }
        let len = u16::try_from(encoding.len()).expect("a set is at most 8 planes of u16 counters");
        buf[2 * self.set..2 * self.set + 2].copy_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(encoding);
        buf.extend_from_slice(&old[range.end..]);
        self.block.buf = buf.into_boxed_slice();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counters and a plain model of them, changed alike.
    fn both(adds: &[(u16, u64)]) -> (Counters, std::collections::BTreeMap<u16, u64>) {
        let mut c = Counters::default();
        let mut model = std::collections::BTreeMap::new();
        for &(i, n) in adds {
            c.add(i, n);
            *model.entry(i).or_default() += n;
        }
        (c, model)
    }

    fn assert_same(c: &Counters, model: &std::collections::BTreeMap<u16, u64>) {
        for i in 0..1200 {
            assert_eq!(
                c.counters().get(i),
                model.get(&i).copied().unwrap_or(0),
                "counter {i}"
            );
        }
    }

    #[test]
    fn counts_carry_into_higher_planes_only_where_they_need_to() {
        let mut adds: Vec<(u16, u64)> = (0..300).map(|_| (40, 1)).collect();
        adds.extend([(35, 1), (50, 1), (45, 70_000), (1100, u64::MAX / 4)]);
        let (c, model) = both(&adds);
        assert_same(&c, &model);
        assert_eq!(c.span(), Some((35, 1100)));
        // Counter 40 needs two digits, 45 three, 1100 eight.
        assert_eq!(c.counters().planes(), 8);
        assert_eq!(c.counters().header(1), (40, 1061));
        assert_eq!(c.counters().header(3), (1100, 1));
    }

    #[test]
    fn one_byte_per_counter_until_a_count_passes_255() {
        let adds: Vec<(u16, u64)> = (100..200).flat_map(|i| [(i, 1), (i, 1)]).collect();
        let (c, model) = both(&adds);
        assert_same(&c, &model);
        assert_eq!(c.bytes().len(), 1 + HEADER + 100);
        assert_eq!(Counters::default().bytes().len(), 0);
    }

    #[test]
    fn increments_across_every_digit_boundary_stay_exact() {
        let mut c = Counters::default();
        for n in 1..=70_000u64 {
            c.add(7, 1);
            if n % 255 == 0 || n.is_power_of_two() {
                assert_eq!(c.counters().get(7), n);
            }
        }
        assert_eq!(c.counters().get(7), 70_000);
        c.add(7, u64::MAX - 70_000);
        assert_eq!(c.counters().get(7), u64::MAX);
    }

    #[test]
    fn folding_moves_the_lowest_counts_into_the_floor() {
        let (mut c, _) = both(&[(10, 300), (11, 1), (20, 5), (30, 70_000)]);
        c.fold_below(20);
        assert_eq!(c.span(), Some((20, 30)));
        assert_eq!(c.counters().get(20), 306);
        assert_eq!(c.counters().get(30), 70_000);
        assert_eq!(c.iter().map(|(_, n)| n).sum::<u64>(), 70_306);
        let before = c.clone();
        c.fold_below(15);
        assert_eq!(c, before, "nothing below the floor: unchanged");
    }

    #[test]
    fn iteration_covers_the_span_with_zeros_between() {
        let (c, _) = both(&[(5, 2), (8, 1)]);
        assert_eq!(
            c.iter().collect::<Vec<_>>(),
            [(5, 2), (6, 0), (7, 0), (8, 1)]
        );
        assert_eq!(Counters::default().iter().count(), 0);
    }

    #[test]
    fn a_block_keeps_each_set_as_a_box_of_its_own_would() {
        // Sets counted in an interleaved order, each against its own box.
        let mut block = CounterBlock::<3>::default();
        let mut alone: [Counters; 3] = Default::default();
        assert_eq!(block.heap_bytes(), 0);
        let adds = (0..2000u64).map(|n| ((n % 3) as usize, (n * 7 % 50) as u16, 1 + n % 2));
        for (set, i, n) in adds.chain([(1, 900, 70_000), (2, 3, u64::MAX / 8)]) {
            block.set_mut(set).add(i, n);
            alone[set].add(i, n);
        }
        block.set_mut(0).fold_below(20);
        alone[0].fold_below(20);
        for (set, c) in alone.iter().enumerate() {
            assert_eq!(block.set(set).0, c.bytes(), "set {set}");
        }
        let sets: usize = alone.iter().map(|c| c.bytes().len()).sum();
        assert_eq!(block.heap_bytes(), 2 * 3 + sets);
        assert_eq!(Counters::copy_of(block.set(1)), alone[1]);
    }
}
