//! Configuration from flags and the environment (clap): each default lives in its `#[arg]`
//! attribute only, and durations are written the friendly way jiff reads (`15s`, `2m`,
//! `500ms`, `1h 30m`).

use std::time::Duration;

/// The value of a flag group with no flags given (the environment still applies, as on the
/// command line): `Default` for the groups, so a default is never written twice.
pub fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults"));
    T::from_arg_matches(&command.get_matches_from(["defaults"]))
        .expect("every flag of a group has a default")
}

/// Parses a flag's duration; zero, negative and unit-less values are refused.
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    let signed: jiff::SignedDuration = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 15s, 2m or 500ms"))?;
    match Duration::try_from(signed) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("{text:?}: a duration must be more than zero")),
    }
}

/// Parses a factor: a finite number above zero (a zero or negative one would do away with
/// every backoff).
pub fn positive_factor(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 => Ok(f),
        _ => Err(format!("{text:?}: a factor must be a number above zero")),
    }
}

#[cfg(test)]
mod tests {
    use super::positive_duration as positive;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(positive("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(positive("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(positive("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(positive("1h 30m"), Ok(Duration::from_secs(5400)));
        for refused in ["3 fortnights", "0s", "0", "-5s", "3", ""] {
            assert!(positive(refused).is_err(), "{refused}");
        }
        assert_eq!(super::positive_factor("0.02"), Ok(0.02));
        for refused in ["0", "-1", "NaN", "inf", "fast"] {
            assert!(super::positive_factor(refused).is_err(), "{refused}");
        }
    }
}
