//! Counters that cost one byte each until they need more: each count is
//! kept as base-256 digits, digit `k` of every counter in plane `k`, and
//! plane `k` spans only the counters that ever carried into it. A
//! distribution's counters differ by orders of magnitude (the middle bins
//! of a latency sketch hold thousands, its tails a handful), so this costs
//! about a byte and a half per counter where `u64`s would cost eight.
//!
//! Everything lives in one boxed slice, allocated to its exact length:
//! `[planes][lo, len as u16 LE, per plane][plane 0 digits][plane 1 digits]...`.
//! The common case, a count going up by one in plane 0 without carrying,
//! is an in-place increment; anything else (a counter outside the planes,
//! a carry) rebuilds the slice, which happens a few times in a counter's
//! life.

/// Counter `i` is at index `i`; indices are u16.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    buf: Box<[u8]>,
}

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

impl Counters {
    fn planes(&self) -> usize {
        self.buf.first().map_or(0, |&p| usize::from(p))
    }

    /// (lo, len) of plane `k`.
    fn header(&self, k: usize) -> (u16, usize) {
        let at = 1 + k * HEADER;
        let lo = u16::from_le_bytes([self.buf[at], self.buf[at + 1]]);
        let len = u16::from_le_bytes([self.buf[at + 2], self.buf[at + 3]]);
        (lo, usize::from(len))
    }

    /// (lo, digits) of every plane, lowest digit first.
    fn each_plane(&self) -> impl Iterator<Item = (u16, &[u8])> {
        let planes = self.planes();
        let mut start = 1 + planes * HEADER;
        (0..planes).map(move |k| {
            let (lo, len) = self.header(k);
            let digits = &self.buf[start..start + len];
            start += len;
            (lo, digits)
        })
    }

    fn decode(&self) -> Vec<Plane> {
        self.each_plane()
            .map(|(lo, digits)| Plane {
                lo,
                digits: digits.to_vec(),
            })
            .collect()
    }

    fn encode(planes: &[Plane]) -> Box<[u8]> {
        if planes.is_empty() {
            return Box::default();
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
        buf.into_boxed_slice()
    }

    /// Adds `n` to counter `i`.
    pub fn add(&mut self, i: u16, n: u64) {
        if n == 1 {
            // Grow the plane the count must carry into, then count.
            while let Err(k) = self.increment_in_place(i) {
                self.cover(k, i);
            }
            return;
        }
        let mut planes = self.decode();
        Self::add_to(&mut planes, i, n);
        self.buf = Self::encode(&planes);
    }

    /// Adds one to counter `i` when every plane it carries into already
    /// spans it (nearly always, once a counter has counted for a while);
    /// otherwise nothing changes and the plane that must grow is named.
    fn increment_in_place(&mut self, i: u16) -> Result<(), usize> {
        let planes = self.planes();
        let mut start = 1 + planes * HEADER;
        // The digits that wrap to 0, at most one per plane.
        let (mut wrapped, mut n) = ([0usize; MAX_PLANES], 0);
        for k in 0..planes {
            let (lo, len) = self.header(k);
            if i < lo || usize::from(i - lo) >= len {
                return Err(k);
            }
            let digit = start + usize::from(i - lo);
            if self.buf[digit] < u8::MAX {
                for &d in &wrapped[..n] {
                    self.buf[d] = 0;
                }
                self.buf[digit] += 1;
                return Ok(());
            }
            // 255: it becomes 0 and carries, if the next plane spans it.
            wrapped[n] = digit;
            n += 1;
            start += len;
        }
        Err(planes)
    }

    /// Makes plane `k` (a new one when `k` is the number of planes) span
    /// counter `i`, in one allocation of the new length.
    fn cover(&mut self, k: usize, i: u16) {
        let planes = self.planes();
        let mut spans: Vec<(u16, usize)> = (0..planes).map(|j| self.header(j)).collect();
        let (before, after) = match spans.get(k) {
            Some(&(lo, _)) if i < lo => (usize::from(lo - i), 0),
            Some(&(lo, len)) => (0, usize::from(i - lo) + 1 - len),
            None => (0, 1),
        };
        let mut buf = Vec::with_capacity(self.buf.len() + before + after + HEADER);
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
            let digits = &self.buf[start.min(self.buf.len())..][..*len];
            start += len;
            if j == k {
                buf.resize(buf.len() + before, 0);
                buf.extend_from_slice(digits);
                buf.resize(buf.len() + after, 0);
            } else {
                buf.extend_from_slice(digits);
            }
        }
        self.buf = buf.into_boxed_slice();
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

    /// The value of counter `i`.
    pub fn get(&self, i: u16) -> u64 {
        self.each_plane()
            .enumerate()
            .filter(|(_, (lo, digits))| i >= *lo && usize::from(i - lo) < digits.len())
            .map(|(k, (lo, digits))| u64::from(digits[usize::from(i - lo)]) << (8 * k))
            .sum()
    }

    /// The first and last counter that ever counted: plane 0's span.
    pub fn span(&self) -> Option<(u16, u16)> {
        (self.planes() > 0).then(|| {
            let (lo, len) = self.header(0);
            (lo, lo + len as u16 - 1)
        })
    }

    /// Every counter of the span, lowest first, as (index, value).
    pub fn iter(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        let (lo, hi) = self.span().unwrap_or((1, 0));
        (lo..=hi).map(|i| (i, self.get(i)))
    }

    /// Moves the counts of every counter below `floor` into `floor`.
    pub fn fold_below(&mut self, floor: u16) {
        let below: u64 = self
            .iter()
            .take_while(|(i, _)| *i < floor)
            .map(|(_, c)| c)
            .sum();
        if below == 0 {
            return;
        }
        let mut planes: Vec<Plane> = self
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
        Self::add_to(&mut planes, floor, below);
        self.buf = Self::encode(&planes);
    }

    /// Bytes on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.buf.len()
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
            assert_eq!(c.get(i), model.get(&i).copied().unwrap_or(0), "counter {i}");
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
        assert_eq!(c.planes(), 8);
        assert_eq!(c.header(1), (40, 1061));
        assert_eq!(c.header(3), (1100, 1));
    }

    #[test]
    fn one_byte_per_counter_until_a_count_passes_255() {
        let adds: Vec<(u16, u64)> = (100..200).flat_map(|i| [(i, 1), (i, 1)]).collect();
        let (c, model) = both(&adds);
        assert_same(&c, &model);
        assert_eq!(c.heap_bytes(), 1 + HEADER + 100);
        assert_eq!(Counters::default().heap_bytes(), 0);
    }

    #[test]
    fn increments_across_every_digit_boundary_stay_exact() {
        let mut c = Counters::default();
        for n in 1..=70_000u64 {
            c.add(7, 1);
            if n % 255 == 0 || n.is_power_of_two() {
                assert_eq!(c.get(7), n);
            }
        }
        assert_eq!(c.get(7), 70_000);
        c.add(7, u64::MAX - 70_000);
        assert_eq!(c.get(7), u64::MAX);
    }

    #[test]
    fn folding_moves_the_lowest_counts_into_the_floor() {
        let (mut c, _) = both(&[(10, 300), (11, 1), (20, 5), (30, 70_000)]);
        c.fold_below(20);
        assert_eq!(c.span(), Some((20, 30)));
        assert_eq!(c.get(20), 306);
        assert_eq!(c.get(30), 70_000);
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
}
