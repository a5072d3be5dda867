//! Kubernetes resource quantities (`"250m"`, `"1.5"`, `"2Gi"`, `"1e3"`) as exact values.
//!
//! The HPA controller works on integer milli-values (`Quantity.MilliValue()`, which rounds
//! up), and on `AsApproximateFloat64()` for tolerances; both are provided here.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A parsed quantity: `mantissa × 10^exp10 × 1024^exp1024` with an exact integer mantissa.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    mantissa: i128,
    exp10: i32,
    exp1024: u32,
}

/// Why a quantity string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {input:?}: {why}")]
pub struct QuantityError {
    input: String,
    why: &'static str,
}

impl Quantity {
    /// Parses a Kubernetes quantity string.
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        let err = |why| QuantityError {
            input: input.to_string(),
            why,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("empty"));
        }
        let (negative, body) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (number, suffix) = body.split_at(num_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err("expected a decimal number"));
        }
        let mut mantissa: i128 = 0;
        let mut exp10: i32 = 0;
        let mut after_point = false;
        for c in number.chars() {
            if c == '.' {
                after_point = true;
                continue;
            }
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(c as u8 - b'0')))
                .ok_or_else(|| err("too many digits"))?;
            if after_point {
                exp10 -= 1;
            }
        }
        let (extra10, exp1024) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 1),
            "Mi" => (0, 2),
            "Gi" => (0, 3),
            "Ti" => (0, 4),
            "Pi" => (0, 5),
            "Ei" => (0, 6),
            _ if suffix.starts_with(['e', 'E']) => {
                let e: i32 = suffix[1..].parse().map_err(|_| err("bad exponent"))?;
                if !(-40..=40).contains(&e) {
                    return Err(err("exponent out of range"));
                }
                (e, 0)
            }
            _ => return Err(err("unknown suffix")),
        };
        Ok(Self {
            mantissa: if negative { -mantissa } else { mantissa },
            exp10: exp10 + extra10,
            exp1024,
        })
    }

    /// A quantity of `milli / 1000` units.
    pub fn from_milli(milli: i64) -> Self {
        Self {
            mantissa: i128::from(milli),
            exp10: -3,
            exp1024: 0,
        }
    }

    /// The value in thousandths, rounded up as Kubernetes' `MilliValue()` does.
    pub fn milli_value(&self) -> i64 {
        self.scaled_ceil(3)
    }

    /// The value in whole units, rounded up as Kubernetes' `Value()` does.
    pub fn value(&self) -> i64 {
        self.scaled_ceil(0)
    }

    /// `ceil(self × 10^scale)`, saturating at the i64 range.
    fn scaled_ceil(&self, scale: i32) -> i64 {
        let mut num = self.mantissa;
        for _ in 0..self.exp1024 {
            num = num.saturating_mul(1024);
        }
        let e = self.exp10 + scale;
        let v = if e >= 0 {
            (0..e).fold(num, |n, _| n.saturating_mul(10))
        } else {
            let den = 10i128.checked_pow(e.unsigned_abs()).unwrap_or(i128::MAX);
            let q = num.div_euclid(den);
            if num.rem_euclid(den) != 0 { q + 1 } else { q }
        };
        v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// The value as a float, like Kubernetes' `AsApproximateFloat64()`.
    pub fn as_f64(&self) -> f64 {
        self.mantissa as f64 * 10f64.powi(self.exp10) * 1024f64.powi(self.exp1024 as i32)
    }
}

impl fmt::Debug for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Quantity({self})")
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const BIN: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
        if self.exp1024 > 0 && self.exp10 == 0 {
            return write!(f, "{}{}", self.mantissa, BIN[self.exp1024 as usize]);
        }
        let milli = self.milli_value();
        if milli % 1000 == 0 {
            write!(f, "{}", milli / 1000)
        } else {
            write!(f, "{milli}m")
        }
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// YAML and JSON authors write `10` as often as `"10"`: accept both.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Float(f64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(s) => s,
            Raw::Int(i) => i.to_string(),
            Raw::Float(x) => format!("{x}"),
        };
        Quantity::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milli_values_match_kubernetes() {
        for (text, milli) in [
            ("10", 10_000),
            ("6666m", 6666),
            ("0.01", 10),
            ("1.5", 1500),
            ("100m", 100),
            ("1k", 1_000_000),
            ("1Ki", 1_024_000),
            ("2Gi", 2 * 1024 * 1024 * 1024 * 1000),
            ("1e3", 1_000_000),
            ("0.0001", 1), // MilliValue rounds up
            ("-1.5", -1500),
            ("500u", 1),
        ] {
            assert_eq!(
                Quantity::parse(text).unwrap().milli_value(),
                milli,
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_garbage() {
        for text in ["", "abc", "1.2.3", "10x", "1e999", "."] {
            assert!(Quantity::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn floats_and_display() {
        assert!((Quantity::parse("0.15").unwrap().as_f64() - 0.15).abs() < 1e-12);
        assert_eq!(Quantity::parse("250m").unwrap().to_string(), "250m");
        assert_eq!(Quantity::parse("3").unwrap().to_string(), "3");
        assert_eq!(Quantity::parse("80Gi").unwrap().to_string(), "80Gi");
        let q: Quantity = serde_json::from_str("10").unwrap();
        assert_eq!(q.milli_value(), 10_000);
    }
}
