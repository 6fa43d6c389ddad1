//! Event timestamps as the API writes them: RFC 3339, UTC, six fractional digits, e.g.
//! `2026-11-22T05:00:00.123456Z`. One implementation for every place that shows a timestamp
//! (the server's event JSON, the projection runtime's event objects, consumer-group records),
//! so that they can never disagree.

/// Formats microseconds since the Unix epoch as RFC 3339 UTC with six fractional digits,
/// e.g. `2026-11-22T05:00:00.123456Z`.
pub fn format_timestamp(micros: i64) -> String {
    let mut out = Vec::with_capacity(27);
    write_timestamp(&mut out, micros);
    String::from_utf8_lossy(&out).into_owned()
}

/// Appends the RFC 3339 form of `micros` (microseconds since the Unix epoch) to `out`, without
/// allocating: the server's event-JSON hot path.
pub fn write_timestamp(out: &mut Vec<u8>, micros: i64) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if (0..=9999).contains(&year) {
        push_digits(out, year, 4);
    } else {
        // Outside RFC 3339's range; still unambiguous.
        out.extend_from_slice(year.to_string().as_bytes());
    }
    out.push(b'-');
    push_digits(out, month, 2);
    out.push(b'-');
    push_digits(out, day, 2);
    out.push(b'T');
    push_digits(out, sod / 3600, 2);
    out.push(b':');
    push_digits(out, sod / 60 % 60, 2);
    out.push(b':');
    push_digits(out, sod % 60, 2);
    out.push(b'.');
    push_digits(out, frac, 6);
    out.push(b'Z');
}

/// Appends the last `width` decimal digits of a non-negative `n`, zero-padded.
fn push_digits(out: &mut Vec<u8>, n: i64, width: u32) {
    let mut div = 10i64.pow(width - 1);
    while div > 0 {
        // `n` is in 0..10^width here; the digit is 0..=9.
        out.push(b'0' + (n / div % 10) as u8);
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
    fn timestamps() {
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
            format_timestamp(1_709_164_800_500_000),
            "2024-02-29T00:00:00.500000Z"
        );
        assert_eq!(
            format_timestamp(253_402_300_799_999_999),
            "9999-12-31T23:59:59.999999Z"
        );
        // Every day boundary for ~800 years agrees with a naive day-by-day count.
        let mut days = 0i64;
        for year in 1970..2770i64 {
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let lens = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            for (m, len) in lens.iter().enumerate() {
                for d in 1..=*len {
                    assert_eq!(civil_from_days(days), (year, m as i64 + 1, d));
                    days += 1;
                }
            }
        }
    }
}
