use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("{0:?} is not an ISO 4217 currency code")]
    UnknownCurrency(String),
    #[error("amount must be a positive whole number of minor units")]
    NotPositive,
    #[error("{0:?} is not a decimal amount in {1}")]
    BadDecimal(String, &'static str),
}

/// An ISO 4217 currency with a minor-unit exponent (EUR 2, JPY 0, BHD 3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(iso_currency::Currency);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let unknown = || MoneyError::UnknownCurrency(code.to_string());
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(unknown());
        }
        let currency = iso_currency::Currency::from_code(code).ok_or_else(unknown)?;
        // Metals and testing codes (XAU, XTS) have no minor unit: not money we move.
        currency.exponent().ok_or_else(unknown)?;
        Ok(Self(currency))
    }

    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// Digits after the decimal point in the major unit.
    pub fn exponent(self) -> u32 {
        u32::from(self.0.exponent().unwrap_or(0))
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.code().to_string()
    }
}

/// A positive amount in integer minor units (cents): money is never a float.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Amount(i64);

impl Amount {
    pub fn parse(minor: i64) -> Result<Self, MoneyError> {
        if minor > 0 {
            Ok(Self(minor))
        } else {
            Err(MoneyError::NotPositive)
        }
    }
    pub fn minor(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Amount {
    type Error = MoneyError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<Amount> for i64 {
    fn from(value: Amount) -> Self {
        value.0
    }
}

/// Minor units as a decimal string in major units: 1050 EUR → "10.50", 500 JPY → "500".
pub fn format_major(minor: i64, currency: Currency) -> String {
    let exponent = currency.exponent();
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{abs}");
    }
    let scale = 10u64.pow(exponent);
    format!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = exponent as usize
    )
}

/// A decimal string in major units as minor units: "10.5" EUR → 1050. More decimals than the
/// currency has, exponents, or anything that is not plain digits is refused.
pub fn parse_major(text: &str, currency: Currency) -> Result<i64, MoneyError> {
    let bad = || MoneyError::BadDecimal(text.to_string(), currency.code());
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let exponent = currency.exponent() as usize;
    let plain = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !plain(whole) || !plain(fraction) || fraction.len() > exponent {
        return Err(bad());
    }
    if digits.contains('.') && fraction.is_empty() {
        return Err(bad());
    }
    let scale = 10i64.pow(exponent as u32);
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let fraction: i64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<exponent$}")
            .parse()
            .map_err(|_| bad())?
    };
    let minor = whole
        .checked_mul(scale)
        .and_then(|w| w.checked_add(fraction))
        .ok_or_else(bad)?;
    Ok(if negative { -minor } else { minor })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    #[test]
    fn currencies_know_their_minor_units() {
        assert_eq!(cur("EUR").exponent(), 2);
        assert_eq!(cur("JPY").exponent(), 0);
        assert_eq!(cur("BHD").exponent(), 3);
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("XAU").is_err());
        assert!(Currency::parse("ABC").is_err());
    }

    #[test]
    fn formats_major_units() {
        assert_eq!(format_major(1050, cur("EUR")), "10.50");
        assert_eq!(format_major(5, cur("EUR")), "0.05");
        assert_eq!(format_major(-1050, cur("USD")), "-10.50");
        assert_eq!(format_major(500, cur("JPY")), "500");
        assert_eq!(format_major(1234, cur("BHD")), "1.234");
    }

    #[test]
    fn parses_major_units() {
        assert_eq!(parse_major("10.50", cur("EUR")), Ok(1050));
        assert_eq!(parse_major("10.5", cur("EUR")), Ok(1050));
        assert_eq!(parse_major("10", cur("EUR")), Ok(1000));
        assert_eq!(parse_major("-0.05", cur("EUR")), Ok(-5));
        assert_eq!(parse_major("500", cur("JPY")), Ok(500));
        for bad in ["10.505", "1e3", "", ".5", "10.", "1,00", "+1", "5.0"] {
            let currency = if bad == "5.0" { cur("JPY") } else { cur("EUR") };
            assert!(parse_major(bad, currency).is_err(), "{bad}");
        }
    }

    #[test]
    fn round_trips() {
        for minor in [0, 1, 99, 100, 123456789] {
            for code in ["EUR", "JPY", "BHD"] {
                assert_eq!(
                    parse_major(&format_major(minor, cur(code)), cur(code)),
                    Ok(minor)
                );
            }
        }
    }

    #[test]
    fn amounts_are_positive() {
        assert!(Amount::parse(0).is_err());
        assert!(Amount::parse(-1).is_err());
        assert_eq!(Amount::parse(1).unwrap().minor(), 1);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any text: a parse never panics, and what parses formats back to a value that
            /// parses to the same minor units.
            #[test]
            fn parsing_any_text_never_panics_and_round_trips(text in ".{0,40}", code in prop::sample::select(vec!["EUR", "JPY", "KWD"])) {
                let currency = Currency::parse(code).unwrap();
                if let Ok(minor) = parse_major(&text, currency) {
                    prop_assert_eq!(parse_major(&format_major(minor, currency), currency), Ok(minor));
                }
            }

            #[test]
            fn minor_units_round_trip(minor in any::<i64>(), code in prop::sample::select(vec!["EUR", "JPY", "KWD"])) {
                let currency = Currency::parse(code).unwrap();
                prop_assert_eq!(parse_major(&format_major(minor, currency), currency), Ok(minor));
            }

            #[test]
            fn currency_codes_never_panic(code in ".{0,6}") {
                if let Ok(currency) = Currency::parse(&code) {
                    prop_assert_eq!(currency.code(), code.as_str());
                }
            }
        }
    }
}
