//! The subscriber's acknowledgement: the last counter it applied, written by
//! `slony-receiver pull` into its own exchange directory on the provider
//! (`<trigger_dir>/<node>/applied_counter`), so the provider's housekeeping deletes only
//! archives the site already has.
//!
//! The file is written by the other side: the provider reads at most [`MAX_LEN`] bytes
//! and accepts nothing but a counter on one line.

use crate::counter::{BadCounter, Counter};

/// Name of the acknowledgement file in a site directory. It matches no archive or batch
/// name, so listings ignore it.
pub const ACK_FILE: &str = "applied_counter";

/// Longest acknowledgement accepted (a counter has at most 19 digits).
pub const MAX_LEN: u64 = 32;

/// The file's contents for `counter`.
pub fn render(counter: Counter) -> String {
    format!("{counter}\n")
}

/// Why an acknowledgement was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadAck {
    /// Longer than [`MAX_LEN`].
    #[error("{ACK_FILE} is longer than {MAX_LEN} bytes")]
    TooLong,
    /// Not UTF-8 or not a counter.
    #[error("{ACK_FILE} does not hold a counter: {0}")]
    NotACounter(#[from] BadCounter),
}

/// Parses the file's contents: one counter, optionally followed by a newline.
pub fn parse(bytes: &[u8]) -> Result<Counter, BadAck> {
    if bytes.len() as u64 > MAX_LEN {
        return Err(BadAck::TooLong);
    }
    let text = String::from_utf8_lossy(bytes);
    let line = text.strip_suffix('\n').unwrap_or(&text);
    if line.contains(['\n', '\r']) {
        return Err(BadAck::NotACounter(BadCounter(line.to_string())));
    }
    Ok(line.parse()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let text = render(Counter(1234));
        assert_eq!(text, "1234\n");
        assert_eq!(parse(text.as_bytes()), Ok(Counter(1234)));
        assert_eq!(parse(b"7"), Ok(Counter(7)));
    }

    #[test]
    fn refuses_anything_else() {
        for bad in [
            &b""[..],
            b"\n",
            b"-1\n",
            b"12 13\n",
            b"12\n13\n",
            b"9223372036854775808\n",
            b"../x",
            b"\xff\xfe",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse(&[b'1'; 40]), Err(BadAck::TooLong));
    }
}
