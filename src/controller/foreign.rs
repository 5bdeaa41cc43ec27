//! Hosts that appear on an account with no create of this operator to explain them:
//! someone else (another install, a person at the provider's console) rents there. They
//! are counted (`rentedhost_foreign_hosts`) and told once per account, since an install
//! that shares its account must never pair a lost create automatically.

use super::resolution::{PendingCreate, Window};
use crate::provider::Host;
use jiff::Timestamp;
use std::collections::HashSet;
use std::time::Duration;

/// What the account looks like to this operator at one listing.
pub struct Sight<'a> {
    /// Host ids some object holds or names, and those this process learned.
    pub claimed: &'a HashSet<String>,
    /// The pending creates of the operator's objects.
    pub pending: &'a [PendingCreate],
    pub window: Window,
    /// Hosts created before this were there before the operator started looking.
    pub since: Timestamp,
    /// Hosts created after this may be ours with an answer not yet recorded (a create's
    /// whole budget, and the clock skew, before the listing began).
    pub settled_before: Timestamp,
}

/// The ids of the listed hosts nobody of ours accounts for.
pub fn foreign<'h>(hosts: &'h [Host], sight: &Sight<'_>) -> Vec<&'h str> {
    let (from, to) = (
        sight.since.as_millisecond(),
        sight.settled_before.as_millisecond(),
    );
    hosts
        .iter()
        .filter_map(|h| Some((h.id.as_deref()?, h.create_time?)))
        .filter(|(id, created)| {
            (from..=to).contains(created)
                && !sight.claimed.contains(*id)
                && !sight
                    .pending
                    .iter()
                    .any(|p| p.admits(sight.window, *created))
        })
        .map(|(id, _)| id)
        .collect()
}

/// The latest instant a host may have been created and still be ours unrecorded.
pub fn settled_before(listing_began: Timestamp, call_limit: Duration, skew: Duration) -> Timestamp {
    let margin = jiff::SignedDuration::try_from(call_limit + skew).unwrap_or_default();
    listing_began - margin
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CreateRequest, PeriodUnit, RentalPeriod};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn host(id: &str, created: i64) -> Host {
        Host {
            id: Some(id.into()),
            create_time: Some(t(created).as_millisecond()),
            ..Default::default()
        }
    }

    #[test]
    fn only_unexplained_hosts_that_appeared_since_the_start_are_foreign() {
        let claimed: HashSet<String> = ["ours".to_string()].into();
        let pending = [PendingCreate {
            key: "ns/a".into(),
            since: t(100),
            call_ended: Some(t(102)),
            deadline: None,
            request: CreateRequest {
                package_id: "p".into(),
                image_id: "i".into(),
                period: RentalPeriod {
                    count: 1,
                    unit: PeriodUnit::Month,
                },
            },
        }];
        let sight = Sight {
            claimed: &claimed,
            pending: &pending,
            window: Window {
                skew: Duration::from_secs(2),
                call_limit: Duration::from_secs(30),
            },
            since: t(0),
            settled_before: t(200),
        };
        let hosts = [
            host("before-start", -10),
            host("ours", 50),
            host("maybe-the-lost-create", 101),
            host("theirs", 150),
            host("too-new-to-say", 250),
        ];
        assert_eq!(foreign(&hosts, &sight), vec!["theirs"]);
    }
}
