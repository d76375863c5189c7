//! Kubernetes resource quantities as exact integers (nano-units), enough to
//! add up per-replica requests into quota totals and to compare a desired
//! quantity with the canonical form the API server returns.

use std::fmt;

/// A quantity in nano-units (1 = 10^-9 of the base unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Quantity(pub i128);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantityError(pub String);

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a valid quantity", self.0)
    }
}

impl std::error::Error for QuantityError {}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let err = || QuantityError(s.to_string());
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(split);
        if number.is_empty() {
            return Err(err());
        }
        let (negative, digits) = match number.as_bytes()[0] {
            b'-' => (true, &number[1..]),
            b'+' => (false, &number[1..]),
            _ => (false, number),
        };
        let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
        if (int_part.is_empty() && frac_part.is_empty())
            || !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(err());
        }
        // mantissa / 10^scale
        let mut mantissa: i128 = 0;
        for b in int_part.bytes().chain(frac_part.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add((b - b'0') as i128))
                .ok_or_else(err)?;
        }
        let scale = frac_part.len() as i32;
        // value = mantissa * 10^-scale * multiplier; multiplier = num * 10^exp10
        let (num, exp10): (i128, i32) = match suffix {
            "" => (1, 0),
            "n" => (1, -9),
            "u" => (1, -6),
            "m" => (1, -3),
            "k" => (1, 3),
            "M" => (1, 6),
            "G" => (1, 9),
            "T" => (1, 12),
            "P" => (1, 15),
            "E" => (1, 18),
            "Ki" => (1 << 10, 0),
            "Mi" => (1 << 20, 0),
            "Gi" => (1 << 30, 0),
            "Ti" => (1 << 40, 0),
            "Pi" => (1 << 50, 0),
            "Ei" => (1 << 60, 0),
            e if e.starts_with(['e', 'E']) => (1, e[1..].parse::<i32>().map_err(|_| err())?),
            _ => return Err(err()),
        };
        // nano = mantissa * num * 10^(exp10 - scale + 9), rounded up (as Kubernetes does).
        let exp = exp10 - scale + 9;
        let base = mantissa.checked_mul(num).ok_or_else(err)?;
        let value = if exp >= 0 {
            10i128
                .checked_pow(exp as u32)
                .and_then(|p| base.checked_mul(p))
                .ok_or_else(err)?
        } else {
            let div = 10i128.checked_pow((-exp) as u32).ok_or_else(err)?;
            (base + div - 1) / div
        };
        Ok(Self(if negative { -value } else { value }))
    }

    pub fn checked_mul(self, n: i128) -> Option<Self> {
        self.0.checked_mul(n).map(Self)
    }

    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }
}

impl fmt::Display for Quantity {
    /// Whole values print with the largest exact binary suffix when they are
    /// byte-like multiples of 1Ki, else as plain integers; fractions as milli-units.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v % NANO != 0 {
            let milli = (v + 999_999).div_euclid(1_000_000);
            return write!(f, "{milli}m");
        }
        let whole = v / NANO;
        for (suffix, shift) in [
            ("Ei", 60),
            ("Pi", 50),
            ("Ti", 40),
            ("Gi", 30),
            ("Mi", 20),
            ("Ki", 10),
        ] {
            let unit = 1i128 << shift;
            if whole != 0 && whole % unit == 0 {
                return write!(f, "{}{suffix}", whole / unit);
            }
        }
        write!(f, "{whole}")
    }
}

/// Two quantity strings that mean the same amount ("1000m" and "1").
pub fn same_quantity(a: &str, b: &str) -> bool {
    a == b || matches!((Quantity::parse(a), Quantity::parse(b)), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> i128 {
        Quantity::parse(s).unwrap().0
    }

    #[test]
    fn parses_decimal_binary_and_exponent_forms() {
        assert_eq!(q("1"), NANO);
        assert_eq!(q("500m"), NANO / 2);
        assert_eq!(q("1.5"), NANO * 3 / 2);
        assert_eq!(q("2k"), 2000 * NANO);
        assert_eq!(q("1Gi"), (1 << 30) * NANO);
        assert_eq!(q("1.5Gi"), 3 * (1 << 29) * NANO);
        assert_eq!(q("1e3"), 1000 * NANO);
        assert_eq!(q("100n"), 100);
        assert!(Quantity::parse("abc").is_err());
        assert!(Quantity::parse("1Zi").is_err());
        assert!(Quantity::parse("").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for s in ["1", "250m", "4Gi", "3Mi", "1500", "7"] {
            assert_eq!(Quantity::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(Quantity::parse("1024Mi").unwrap().to_string(), "1Gi");
        assert_eq!(Quantity::parse("2000m").unwrap().to_string(), "2");
    }

    #[test]
    fn compares_canonical_forms() {
        assert!(same_quantity("1000m", "1"));
        assert!(same_quantity("1Gi", "1024Mi"));
        assert!(same_quantity("2000", "2k"));
        assert!(!same_quantity("1", "1001m"));
    }
}
