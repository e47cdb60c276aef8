//! Instants as text, for what people read (the CLI, notifications). One calendar conversion for
//! the whole project, so the wasm core needs no date crate.

/// `ms` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SS UTC`: for messages people read in chat.
pub fn utc_for_people(ms: u64) -> String {
    // `YYYY-MM-DDTHH:MM:SS.mmmZ` → date, a space, the time to the second.
    let t = rfc3339(ms);
    format!("{} {} UTC", &t[..10], &t[11..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_print_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn instants_print_for_people_in_utc() {
        assert_eq!(utc_for_people(1_700_000_000_123), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc_for_people(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
