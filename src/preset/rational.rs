//! Frame rates as exact rationals: the preset's `output.fps` and every rate the video code
//! reads, computes and writes.
//!
//! Rates stay rational end to end (24000/1001 is not 23.976) so that frame `n` of a
//! constant-rate output sits at exactly `n * den / num` seconds.

use std::fmt;
use std::str::FromStr;

/// A positive rational number, always stored in lowest terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rational {
    pub num: u32,
    pub den: u32,
}

/// Highest frame rate we accept; anything above is a container time base, not a rate.
pub const MAX_FPS: f64 = 1000.0;

/// Rates that cameras, editors and players use; near-misses are snapped onto these.
const STANDARD_RATES: [(u32, u32); 14] = [
    (24000, 1001),
    (24, 1),
    (25, 1),
    (30000, 1001),
    (30, 1),
    (48, 1),
    (50, 1),
    (60000, 1001),
    (60, 1),
    (12, 1),
    (15, 1),
    (90, 1),
    (100, 1),
    (120, 1),
];

/// Relative distance under which a measured rate counts as a standard one.
const SNAP_TOLERANCE: f64 = 0.002;

/// Rates that match no standard rate are rounded to a multiple of 1/100.
pub const MAX_PLAIN_DENOMINATOR: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid frame rate {text:?}: {reason}")]
pub struct ParseRationalError {
    pub text: String,
    pub reason: &'static str,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Rational {
    /// `num/den` in lowest terms; `None` when either part is zero.
    pub fn new(num: u32, den: u32) -> Option<Self> {
        if num == 0 || den == 0 {
            return None;
        }
        let g = gcd(num as u64, den as u64) as u32;
        Some(Self {
            num: num / g,
            den: den / g,
        })
    }

    /// An integer rate.
    pub fn integer(value: u32) -> Option<Self> {
        Self::new(value, 1)
    }

    /// From a signed pair as FFmpeg stores it; `None` for 0/0, negatives and overflow.
    pub fn from_signed(num: i64, den: i64) -> Option<Self> {
        if num <= 0 || den <= 0 {
            return None;
        }
        let g = gcd(num as u64, den as u64);
        let (n, d) = (num as u64 / g, den as u64 / g);
        if n > u32::MAX as u64 || d > u32::MAX as u64 {
            return None;
        }
        Self::new(n as u32, d as u32)
    }

    pub fn as_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// Duration of one frame at this rate, in seconds.
    pub fn frame_duration_secs(self) -> f64 {
        self.den as f64 / self.num as f64
    }

    /// Start time in seconds of frame `index` on a grid of this rate.
    pub fn frame_time_secs(self, index: u64) -> f64 {
        (index as f64 * self.den as f64) / self.num as f64
    }

    /// `value` rounded to a multiple of `1/den` (e.g. 29.8678 with den 100 -> 2987/100).
    pub fn rounded(value: f64, den: u32) -> Option<Self> {
        let scaled = (value * den as f64).round();
        if !scaled.is_finite() || scaled < 1.0 || scaled > u32::MAX as f64 {
            return None;
        }
        Self::new(scaled as u32, den)
    }
}

impl fmt::Display for Rational {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

impl FromStr for Rational {
    type Err = ParseRationalError;

    /// Accepts `24`, `24000/1001` and decimals such as `23.976` (snapped to 24000/1001).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseRationalError {
            text: text.to_string(),
            reason,
        };
        let trimmed = text.trim();
        let rate = if let Some((n, d)) = trimmed.split_once('/') {
            let num: u32 = n
                .trim()
                .parse()
                .map_err(|_| err("numerator is not a whole number"))?;
            let den: u32 = d
                .trim()
                .parse()
                .map_err(|_| err("denominator is not a whole number"))?;
            Rational::new(num, den).ok_or_else(|| err("numerator and denominator must be > 0"))?
        } else {
            let value: f64 = trimmed.parse().map_err(|_| err("not a number"))?;
            if value.is_nan() || value <= 0.0 {
                return Err(err("must be > 0"));
            }
            if value.fract() == 0.0 && value <= u32::MAX as f64 {
                Rational::integer(value as u32).ok_or_else(|| err("must be > 0"))?
            } else {
                // Up to 6 decimals are kept exactly: "12.5" is 25/2, "29.87" is 2987/100.
                snap_to_standard(value)
                    .or_else(|| Rational::rounded(value, 1_000_000))
                    .ok_or_else(|| err("out of range"))?
            }
        };
        if rate.as_f64() > MAX_FPS {
            return Err(err("above 1000 frames per second"));
        }
        Ok(rate)
    }
}

/// The standard rate within 0.2 % of `value`, if any.
pub fn snap_to_standard(value: f64) -> Option<Rational> {
    STANDARD_RATES
        .iter()
        .map(|&(n, d)| Rational { num: n, den: d })
        .filter(|r| ((r.as_f64() - value) / value).abs() <= SNAP_TOLERANCE)
        .min_by(|a, b| {
            let da = (a.as_f64() - value).abs();
            let db = (b.as_f64() - value).abs();
            da.total_cmp(&db)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(num: u32, den: u32) -> Rational {
        Rational::new(num, den).unwrap()
    }

    #[test]
    fn new_reduces_and_rejects_zero() {
        assert_eq!(r(48, 2), Rational { num: 24, den: 1 });
        assert_eq!(
            r(60000, 2002),
            Rational {
                num: 30000,
                den: 1001
            }
        );
        assert_eq!(Rational::new(0, 1), None);
        assert_eq!(Rational::new(1, 0), None);
        assert_eq!(Rational::from_signed(-24, 1), None);
        assert_eq!(Rational::from_signed(0, 0), None);
        assert_eq!(Rational::from_signed(50, 2), Some(r(25, 1)));
    }

    #[test]
    fn parse_forms() {
        assert_eq!("24".parse::<Rational>().unwrap(), r(24, 1));
        assert_eq!("24000/1001".parse::<Rational>().unwrap(), r(24000, 1001));
        assert_eq!("23.976".parse::<Rational>().unwrap(), r(24000, 1001));
        assert_eq!("29.97".parse::<Rational>().unwrap(), r(30000, 1001));
        assert_eq!("12.5".parse::<Rational>().unwrap(), r(25, 2));
        assert_eq!(" 30 / 1 ".parse::<Rational>().unwrap(), r(30, 1));
        for bad in ["", "abc", "0", "-5", "24/0", "0/1", "5000", "1/x", "nan"] {
            assert!(bad.parse::<Rational>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["24", "24000/1001", "25/2"] {
            assert_eq!(text.parse::<Rational>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn rounded_to_denominator() {
        assert_eq!(Rational::rounded(29.8678, 100), Some(r(2987, 100)));
        assert_eq!(Rational::rounded(0.5, 100), Some(r(1, 2)));
        assert_eq!(Rational::rounded(24.0, 100), Some(r(24, 1)));
        assert_eq!(Rational::rounded(0.001, 100), None);
        assert_eq!(Rational::rounded(f64::NAN, 100), None);
    }

    #[test]
    fn frame_times() {
        let ntsc = r(30000, 1001);
        assert!((ntsc.frame_time_secs(30000) - 1001.0).abs() < 1e-9);
        assert!((r(24, 1).frame_duration_secs() - 1.0 / 24.0).abs() < 1e-15);
    }
}
