//! The archive counter: Slony's `sl_archive_counter.ac_num`, dense and never reset.
//!
//! A replica at counter `n` has applied archives `1..=n` and applies `n + 1` next.

use std::fmt;
use std::str::FromStr;

/// A position in the archive stream (archive number, or the last one applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Counter(pub u64);

/// The largest counter we accept: what fits a PostgreSQL `bigint`.
pub const MAX_COUNTER: u64 = i64::MAX as u64;

impl Counter {
    /// The counter that follows this one.
    pub fn next(self) -> Counter {
        Counter(self.0 + 1)
    }

    /// The counter as PostgreSQL's `bigint`.
    pub fn as_i64(self) -> i64 {
        // Parsing caps counters at MAX_COUNTER, so this never truncates.
        self.0 as i64
    }
}

impl fmt::Display for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a counter did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an archive counter (expected digits, at most {MAX_COUNTER})")]
pub struct BadCounter(pub String);

impl FromStr for Counter {
    type Err = BadCounter;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() || t.len() > 20 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadCounter(s.to_string()));
        }
        match t.parse::<u64>() {
            Ok(n) if n <= MAX_COUNTER => Ok(Counter(n)),
            _ => Err(BadCounter(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_digits_only() {
        assert_eq!("42".parse(), Ok(Counter(42)));
        assert_eq!(" 7\n".parse(), Ok(Counter(7)));
        assert!("".parse::<Counter>().is_err());
        assert!("-1".parse::<Counter>().is_err());
        assert!("1e3".parse::<Counter>().is_err());
        assert!("99999999999999999999".parse::<Counter>().is_err());
        assert_eq!(Counter(9).next(), Counter(10));
    }
}
