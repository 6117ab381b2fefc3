//! Durations as Kuma writes them: `24h`, `1d`, `10y`, `1h30m`, `500ms`.

use std::time::Duration;

/// Parses a duration made of one or more `<number><unit>` parts, where unit is
/// one of `ms`, `s`, `m`, `h`, `d` (24 h) or `y` (365 d).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{text:?} is not a duration like 24h, 1d or 10y"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?} has a number that is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_secs = match &rest[..unit_len] {
            "ms" => None,
            "s" => Some(1),
            "m" => Some(60),
            "h" => Some(3600),
            "d" => Some(86_400),
            "y" => Some(365 * 86_400),
            "" => return Err(format!("{text:?} needs a unit (ms, s, m, h, d or y)")),
            u => {
                return Err(format!(
                    "{text:?} has unknown unit {u:?} (use ms, s, m, h, d or y)"
                ))
            }
        };
        let part = match unit_secs {
            None => Duration::from_millis(n),
            Some(s) => n
                .checked_mul(s)
                .map(Duration::from_secs)
                .ok_or_else(|| format!("{text:?} is too long"))?,
        };
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("{text:?} is too long"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kuma_durations() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(
            parse_duration("10y"),
            Ok(Duration::from_secs(3650 * 86_400))
        );
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn refuses_malformed_durations() {
        for bad in ["", "h", "24", "1w", "1.5h", "-1h", "1h 30m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
