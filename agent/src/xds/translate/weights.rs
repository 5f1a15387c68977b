//! Turning shares (a route's cluster weight times an endpoint's share of its
//! cluster) into the integer weights the kernel picks by, exactly when the
//! numbers allow and to within one part in 2^24 otherwise.

/// A share of a service's traffic, as a fraction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    pub num: u128,
    pub den: u128,
}

impl Share {
    pub fn new(num: u128, den: u128) -> Self {
        debug_assert!(den > 0);
        let g = gcd(num, den).max(1);
        Share {
            num: num / g,
            den: den / g,
        }
    }

    /// `self * other`, `None` if it does not fit.
    pub fn times(self, other: Share) -> Option<Share> {
        Some(Share::new(
            self.num.checked_mul(other.num)?,
            self.den.checked_mul(other.den)?,
        ))
    }

    pub fn plus(self, other: Share) -> Option<Share> {
        let den = lcm(self.den, other.den)?;
        let num = (self.num.checked_mul(den / self.den)?)
            .checked_add(other.num.checked_mul(den / other.den)?)?;
        Some(Share::new(num, den))
    }

    fn as_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn lcm(a: u128, b: u128) -> Option<u128> {
    (a / gcd(a, b).max(1)).checked_mul(b)
}

/// Integer weights in the same proportions as `shares`, as small as they
/// can be, summing to at most `u32::MAX`. A positive share never becomes 0.
pub fn integer_weights(shares: &[Share]) -> Vec<u32> {
    exact(shares).unwrap_or_else(|| approximate(shares))
}

fn exact(shares: &[Share]) -> Option<Vec<u32>> {
    let den = shares.iter().try_fold(1u128, |acc, s| lcm(acc, s.den))?;
    let nums: Vec<u128> = shares
        .iter()
        .map(|s| s.num.checked_mul(den / s.den))
        .collect::<Option<_>>()?;
    let g = nums.iter().copied().fold(0, gcd).max(1);
    let total: u128 = nums.iter().map(|n| n / g).sum();
    if total > u128::from(u32::MAX) {
        return None;
    }
    Some(nums.iter().map(|n| (n / g) as u32).collect())
}

/// Shares too fine for exact integers are scaled to a total of 2^24.
fn approximate(shares: &[Share]) -> Vec<u32> {
    const SCALE: f64 = (1u32 << 24) as f64;
    shares
        .iter()
        .map(|s| {
            if s.num == 0 {
                0
            } else {
                ((s.as_f64() * SCALE).round() as u32).max(1)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_clusters_over_endpoints_are_exact_and_reduced() {
        // 30/70 over two clusters of two equal endpoints each.
        let half = Share::new(1, 2);
        let shares = [
            Share::new(30, 100).times(half).unwrap(),
            Share::new(30, 100).times(half).unwrap(),
            Share::new(70, 100).times(half).unwrap(),
            Share::new(70, 100).times(half).unwrap(),
        ];
        assert_eq!(integer_weights(&shares), vec![3, 3, 7, 7]);
    }

    #[test]
    fn huge_denominators_fall_back_to_close_approximations() {
        let primes = [4_294_967_291u128, 4_294_967_279, 4_294_967_231];
        let shares: Vec<Share> = primes.iter().map(|&p| Share::new(1, p)).collect();
        let w = integer_weights(&shares);
        assert!(w.iter().all(|&x| x > 0));
        let total: u64 = w.iter().map(|&x| u64::from(x)).sum();
        assert!(total <= u64::from(u32::MAX));
        // Nearly equal shares stay nearly equal.
        assert!(
            w.iter().max().unwrap() - w.iter().min().unwrap() <= 1,
            "{w:?}"
        );
    }

    #[test]
    fn tiny_shares_stay_routable() {
        let shares = [Share::new(1, u128::from(u64::MAX)), Share::new(1, 1)];
        let w = integer_weights(&shares);
        assert!(w[0] >= 1 && w[1] > w[0], "{w:?}");
    }

    #[test]
    fn sums_of_shares() {
        let s = Share::new(1, 3).plus(Share::new(1, 6)).unwrap();
        assert_eq!(s, Share::new(1, 2));
    }
}
