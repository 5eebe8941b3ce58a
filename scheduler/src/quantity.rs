//! Kubernetes resource quantities (`100m`, `1.5`, `128Mi`, `1e3`, `2Gi`), parsed exactly:
//! the scheduler compares sums of requests with capacity, so a rounding error would let a
//! node be overcommitted. Values are held in nano-units and rounded up when read as milli
//! or whole units, as Kubernetes rounds.

/// A quantity that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quantity {0:?} must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)]
pub struct QuantityError(pub String);

/// A parsed quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Quantity {
    nanos: i128,
}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    /// In thousandths (CPU in millicores), rounded up.
    pub fn milli_value(self) -> i64 {
        div_ceil(self.nanos, 1_000_000).clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// In whole units (bytes, pods), rounded up.
    pub fn value(self) -> i64 {
        div_ceil(self.nanos, NANO).clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && a > 0 { q + 1 } else { q }
}

/// Parses a quantity.
pub fn parse_quantity(text: &str) -> Result<Quantity, QuantityError> {
    let err = || QuantityError(text.to_string());
    let s = text.trim();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') || int.len() + frac.len() > 30 {
        return Err(err());
    }
    let digits: i128 = format!("{int}{frac}").parse().map_err(|_| err())?;
    let scale = frac.len() as u32;
    // The multiplier in nano-units, as a numerator over 10^scale.
    let mult: i128 = match suffix {
        "n" => 1,
        "u" => 1_000,
        "m" => 1_000_000,
        "" => NANO,
        "k" => NANO * 1_000,
        "M" => NANO * 1_000_000,
        "G" => NANO * 1_000_000_000,
        "T" => NANO * 1_000_000_000_000,
        "P" => NANO * 1_000_000_000_000_000,
        "E" => NANO * 1_000_000_000_000_000_000,
        "Ki" => NANO << 10,
        "Mi" => NANO << 20,
        "Gi" => NANO << 30,
        "Ti" => NANO << 40,
        "Pi" => NANO << 50,
        "Ei" => NANO << 60,
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().map_err(|_| err())?;
            if !(-9..=18).contains(&exp) {
                return Err(err());
            }
            if exp >= 0 {
                NANO * 10i128.pow(exp as u32)
            } else {
                NANO / 10i128.pow((-exp) as u32)
            }
        }
        _ => return Err(err()),
    };
    let total = digits.checked_mul(mult).ok_or_else(err)?;
    let nanos = div_ceil(total, 10i128.pow(scale));
    Ok(Quantity {
        nanos: if negative { -nanos } else { nanos },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        parse_quantity(s).expect(s)
    }

    #[test]
    fn cpu_and_memory_read_exactly() {
        assert_eq!(q("100m").milli_value(), 100);
        assert_eq!(q("1.5").milli_value(), 1500);
        assert_eq!(q("2").milli_value(), 2000);
        assert_eq!(q("0.1").milli_value(), 100);
        assert_eq!(q("128Mi").value(), 128 * 1024 * 1024);
        assert_eq!(q("1G").value(), 1_000_000_000);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("1.5Gi").value(), 3 * 512 * 1024 * 1024);
        assert_eq!(q("-1").value(), -1);
    }

    #[test]
    fn fractions_round_up_as_kubernetes_rounds() {
        assert_eq!(
            q("0.0001").milli_value(),
            1,
            "a tenth of a millicore is one millicore"
        );
        assert_eq!(q("1n").value(), 1);
        assert_eq!(q("1500m").value(), 2);
    }

    #[test]
    fn malformed_quantities_are_refused() {
        for bad in ["", "abc", "1.2.3", "1Q", "m", "1 Gi", "."] {
            assert!(parse_quantity(bad).is_err(), "{bad}");
        }
    }
}
