//! Times as the product reads and prints them, through chrono: the timestamps PostgreSQL
//! prints into archives and tracking tables, and UTC times for reports and mail.

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, NaiveTime, Utc};
use std::time::SystemTime;

/// Parses a PostgreSQL timestamp as printed (`2026-11-21 22:06:43.093233`, optionally
/// with a zone such as `+00`, `-05:30` or `Z`, and `T` accepted as the separator) into
/// microseconds since the Unix epoch, reading the wall clock as UTC and ignoring the zone:
/// `at_created` is a `timestamp without time zone` into which PostgreSQL stored the
/// archive's literal with its zone dropped, so both sides compare as wall clocks.
/// `None` for anything else (`infinity`, BC dates, junk).
pub fn parse_pg_timestamp(s: &str) -> Option<i64> {
    let (date, time) = s.trim().split_once([' ', 'T'])?;
    if !shaped(date, "dddd-dd-dd") {
        return None;
    }
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let time = time.trim_start();
    let zone_at = time.find(['+', '-', 'Z']).unwrap_or(time.len());
    let (clock, zone) = time.split_at(zone_at);
    let valid_zone = zone.is_empty()
        || zone == "Z"
        || (zone.len() > 1 && zone[1..].bytes().all(|b| b.is_ascii_digit() || b == b':'));
    let clock = clock.trim_end();
    let (hms, frac) = match clock.split_once('.') {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (clock, None),
    };
    let frac_ok = frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
    if !valid_zone || !frac_ok || !shaped(hms, "dd:dd:dd") {
        return None;
    }
    // Microseconds: pad or cut to six digits (PostgreSQL prints at most six).
    let micros: i64 = frac.map_or(Some(0), |f| {
        f.chars()
            .chain(std::iter::repeat('0'))
            .take(6)
            .collect::<String>()
            .parse()
            .ok()
    })?;
    // 24:00:00 is valid PostgreSQL input (the next midnight); chrono reads 23:59:60 as a
    // leap second, which PostgreSQL also accepts.
    let (midnight_after, hms) = match hms {
        "24:00:00" => (true, "00:00:00"),
        h => (false, h),
    };
    let clock = NaiveTime::parse_from_str(hms, "%H:%M:%S").ok()?;
    let mut at = date.and_time(clock).and_utc();
    if midnight_after {
        at += ChronoDuration::days(1);
    }
    Some(at.timestamp_micros() + micros)
}

/// Whether `s` has the shape of `pattern`, where `d` stands for an ASCII digit.
fn shaped(s: &str, pattern: &str) -> bool {
    s.len() == pattern.len()
        && s.bytes().zip(pattern.bytes()).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            p => c == p,
        })
}

/// RFC 3339 in UTC, to the second (`2026-11-21T22:06:43Z`). A time beyond what a
/// calendar can print (a damaged state file, say) is printed as seconds from the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).ok(),
        // Before the epoch: whole seconds, rounded down.
        Err(e) => {
            let d = e.duration();
            i64::try_from(d.as_secs())
                .ok()
                .map(|s| -s - i64::from(d.subsec_nanos() > 0))
        }
    };
    match secs.and_then(|s| DateTime::<Utc>::from_timestamp(s, 0)) {
        Some(at) => at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => format!("{} s after the epoch", secs.unwrap_or(i64::MAX)),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the Unix epoch.
pub fn format_utc(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0))
        .map_or_else(
            || format!("{secs} s after the epoch"),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

/// `3725` -> `1h 2m`: the two largest units, for people.
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let parts = [(d, "d"), (h, "h"), (m, "m"), (s, "s")];
    let text: Vec<String> = parts
        .iter()
        .skip_while(|(v, _)| *v == 0)
        .take(2)
        .filter(|(v, _)| *v > 0)
        .map(|(v, unit)| format!("{v}{unit}"))
        .collect();
    if text.is_empty() {
        "0s".into()
    } else {
        text.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_parse_as_utc_wall_clock() {
        // 2026-11-21 00:00:00 UTC is 1_795_219_200 s after the epoch.
        let day = 1_795_219_200i64 * 1_000_000;
        assert_eq!(parse_pg_timestamp("2026-11-21 00:00:00"), Some(day));
        assert_eq!(
            parse_pg_timestamp("2026-11-21 22:06:43.093233"),
            Some(day + (22 * 3600 + 6 * 60 + 43) * 1_000_000 + 93_233)
        );
        // The zone is ignored: at_created (timestamp without time zone) holds the same
        // wall clock with the zone dropped.
        assert_eq!(
            parse_pg_timestamp("2026-11-21 22:06:43.093233+00"),
            parse_pg_timestamp("2026-11-21 22:06:43.093233")
        );
        assert_eq!(
            parse_pg_timestamp("2026-11-21 22:06:43-05:30"),
            parse_pg_timestamp("2026-11-21T22:06:43Z")
        );
        assert_eq!(
            parse_pg_timestamp("2026-11-21 22:06:43.5"),
            Some(day + 79_603_500_000)
        );
        assert_eq!(parse_pg_timestamp("1970-01-01 00:00:00"), Some(0));
        assert_eq!(
            parse_pg_timestamp("2000-02-29 00:00:00"),
            Some(951_782_400_000_000)
        );
        assert_eq!(
            parse_pg_timestamp("2026-11-20 24:00:00"),
            Some(day),
            "24:00:00 is the next midnight"
        );
        assert_eq!(
            parse_pg_timestamp("2026-11-20 23:59:60"),
            Some(day),
            "a leap second"
        );
        for bad in [
            "",
            "infinity",
            "2026-11-21",
            "2026-13-01 00:00:00",
            "2026-02-29 00:00:00",
            "2026-11-21 25:00:00",
            "2026-11-21 24:00:01",
            "2026-11-21 10:00:00.",
            "2026-11-21 10:00:00 BC",
            "2026-11-21 10:00:00+xx",
            "26-11-21 10:00:00",
            "2026-11-21 1:00:00",
        ] {
            assert_eq!(parse_pg_timestamp(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn utc_times_print() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_298_803)),
            "2026-11-21T22:06:43Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
            "1969-12-31T23:59:59Z"
        );
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(1_795_298_803), "2026-11-21 22:06:43 UTC");
    }

    #[test]
    fn durations_for_humans() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(15), "15s");
        assert_eq!(human_duration(3725), "1h 2m");
        assert_eq!(human_duration(7200), "2h");
        assert_eq!(human_duration(90_061), "1d 1h");
    }
}
