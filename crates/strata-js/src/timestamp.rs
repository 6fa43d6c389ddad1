//! RFC 3339 timestamps exactly as the server writes them (`crates/strata-server/src/event_json.rs`):
//! UTC, six fractional digits, e.g. `2026-11-22T05:00:00.123456Z`.
//!
//! Replicated rather than shared: the server keeps its byte-level writer private to its hot path,
//! and the store has no formatting helper. The tests below pin the same fixtures as the server's.

/// Formats microseconds since the Unix epoch.
pub(crate) fn format_timestamp(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = String::with_capacity(27);
    if (0..=9999).contains(&year) {
        push_digits(&mut out, year, 4);
    } else {
        // Outside RFC 3339's range; still unambiguous (as the server does).
        out.push_str(&year.to_string());
    }
    out.push('-');
    push_digits(&mut out, month, 2);
    out.push('-');
    push_digits(&mut out, day, 2);
    out.push('T');
    push_digits(&mut out, sod / 3600, 2);
    out.push(':');
    push_digits(&mut out, sod / 60 % 60, 2);
    out.push(':');
    push_digits(&mut out, sod % 60, 2);
    out.push('.');
    push_digits(&mut out, frac, 6);
    out.push('Z');
    out
}

/// Appends the last `width` decimal digits of a non-negative `n`, zero-padded.
fn push_digits(out: &mut String, n: i64, width: u32) {
    let mut div = 10i64.pow(width - 1);
    while div > 0 {
        // `n / div % 10` is in 0..=9 for the non-negative `n` passed here.
        out.push(char::from(b'0' + (n / div % 10) as u8));
        div /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_fixtures_as_the_server() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_timestamp(1), "1970-01-01T00:00:00.000001Z");
        assert_eq!(format_timestamp(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            format_timestamp(1_795_323_600_123_456),
            "2026-11-22T05:00:00.123456Z"
        );
        assert_eq!(
            format_timestamp(951_782_400_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(
            format_timestamp(253_402_300_799_999_999),
            "9999-12-31T23:59:59.999999Z"
        );
    }
}
