//! Human sizes in pipeline files: "64MiB", "512KiB", "1GiB", "1000000" (bytes).

use serde::{Deserialize, Deserializer};

/// A size that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// No number first.
    #[error("invalid size \"{text}\"; expected e.g. \"64MiB\"")]
    Number {
        /// The size as written (trimmed).
        text: String,
    },
    /// A unit that is none of the known ones.
    #[error("invalid size unit \"{unit}\" in \"{text}\"; expected B, KiB, MiB, GiB, KB, MB or GB")]
    Unit {
        /// The unit as written.
        unit: String,
        /// The size as written (trimmed).
        text: String,
    },
    /// More bytes than a `usize` holds.
    #[error("size \"{text}\" is too large")]
    TooLarge {
        /// The size as written (trimmed).
        text: String,
    },
}

/// Parses a size: a number, optionally followed by B, KiB, MiB, GiB (powers of 1024) or KB, MB,
/// GB (powers of 1000).
pub fn parse(text: &str) -> Result<usize, SizeError> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number.parse().map_err(|_| SizeError::Number { text: text.to_string() })?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(SizeError::Unit { unit: other.to_string(), text: text.to_string() }),
    };
    number.checked_mul(scale).ok_or_else(|| SizeError::TooLarge { text: text.to_string() })
}

/// `Option<usize>` fields: absent, or a human size string.
pub mod option {
    use super::*;

    /// Deserializes a present human size string.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse(&text).map(Some).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(super::parse("64MiB"), Ok(64 << 20));
        assert_eq!(super::parse("1 GiB"), Ok(1 << 30));
        assert_eq!(super::parse("1500"), Ok(1500));
        assert_eq!(super::parse("2KB"), Ok(2000));
        assert!(super::parse("12 parsecs").unwrap_err().to_string().contains("invalid size unit"));
        assert!(super::parse("MiB").is_err());
    }
}
