//! A budget's arithmetic, as pure functions of the budget and the time: its window, what
//! fits, and the life of a reservation (held, then spent or returned).

use crate::api::{BudgetWindow, RentedHost, RentedHostBudget, RentedHostBudgetStatus, Reservation};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use rust_decimal::Decimal;
use std::str::FromStr;

/// The window `now` falls in: a month in UTC (`2026-12`), or `Total`.
pub fn window_at(window: BudgetWindow, now: Timestamp) -> String {
    match window {
        BudgetWindow::Month => {
            let date = now.to_zoned(TimeZone::UTC).date();
            format!("{:04}-{:02}", date.year(), date.month())
        }
        BudgetWindow::Total => "Total".into(),
    }
}

/// When the window of `now` ends: the first instant of the next month in UTC.
pub fn window_end(window: BudgetWindow, now: Timestamp) -> Option<Timestamp> {
    match window {
        BudgetWindow::Total => None,
        BudgetWindow::Month => {
            let first = now.to_zoned(TimeZone::UTC).date().first_of_month();
            let next = first.checked_add(jiff::Span::new().months(1)).ok()?;
            next.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
        }
    }
}

/// The budget's limit in CNY; `None` when it cannot be read (the API server's validation
/// keeps that out).
pub fn limit(budget: &RentedHostBudget) -> Option<Decimal> {
    let value = match &budget.spec.limit {
        IntOrString::Int(n) => Decimal::from(*n),
        IntOrString::String(s) => Decimal::from_str(s.trim()).ok()?,
    };
    (!value.is_sign_negative()).then_some(value)
}

/// An amount as the status writes it: exact, with at least two decimal places (`259.20`).
pub fn money(amount: Decimal) -> String {
    let mut amount = amount.normalize();
    if amount.scale() < 2 {
        amount.rescale(2);
    }
    amount.to_string()
}

/// An amount as a message shows it: to the fen, thousands grouped (`4,900.00`).
pub fn shown(amount: Decimal) -> String {
    let text = format!("{:.2}", amount.round_dp(2));
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, "00"));
    let digits: Vec<char> = whole.chars().collect();
    let mut grouped = String::new();
    for (i, c) in digits.iter().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(*c);
    }
    format!("{grouped}.{fraction}")
}

/// What the reservations hold together (`status.reserved`).
fn held(status: &RentedHostBudgetStatus) -> Decimal {
    status
        .reservations
        .iter()
        .map(|r| read(Some(&r.amount)))
        .sum()
}

fn read(amount: Option<&str>) -> Decimal {
    amount
        .and_then(|a| Decimal::from_str(a).ok())
        .unwrap_or_default()
}

/// Whether `next` is a later window than `before`: only a later month starts from nothing.
/// A month back (a clock behind another replica's) is not one, and a change of kind
/// (`Month` and `Total`) carries what was spent over.
fn turned(before: &str, next: &str) -> bool {
    let month = |w: &str| w.len() == 7 && w.as_bytes()[4] == b'-';
    month(before) && month(next) && next > before
}

/// The budget's status as of `now`: a window that turned starts from nothing spent (the
/// reservations stay: their creates may be under way), `reserved` is their sum.
pub fn current(budget: &RentedHostBudget, now: Timestamp) -> RentedHostBudgetStatus {
    let mut status = budget.status.clone().unwrap_or_default();
    let window = window_at(budget.spec.window, now);
    match status.window.as_deref() {
        Some(before) if turned(before, &window) => {
            status.spent = None;
            status.hosts = None;
            status.window = Some(window);
        }
        // A month behind the recorded one (this clock behind another replica's): the
        // later month and its spend stay.
        Some(before) if turned(&window, before) => {}
        _ => status.window = Some(window),
    }
    status.spent = Some(money(read(status.spent.as_deref())));
    status.hosts = Some(status.hosts.unwrap_or(0));
    status.reserved = Some(money(held(&status)));
    status.observed_generation = budget.metadata.generation;
    status
}

/// Holds `reservation.amount` for its create, if it fits beside what the window spent and
/// what other creates hold; else says why, with the figures. A reservation already held
/// for the same create is held once.
pub fn reserve(
    budget: &RentedHostBudget,
    reservation: Reservation,
    now: Timestamp,
) -> Result<RentedHostBudgetStatus, String> {
    let mut status = current(budget, now);
    // Spent, if at all, in the window it is held in.
    let mut reservation = reservation;
    reservation.window = status.window.clone().unwrap_or_default();
    let same = |r: &Reservation| r.uid == reservation.uid && r.since == reservation.since;
    if status.reservations.iter().any(same) {
        return Ok(status);
    }
    let name = budget.name_any();
    let Some(limit) = limit(budget) else {
        return Err(format!(
            "RentedHostBudget {name}'s spec.limit cannot be read: no create is sent"
        ));
    };
    let amount = read(Some(&reservation.amount));
    let spent = read(status.spent.as_deref());
    let reserved = held(&status);
    let window = status.window.clone().unwrap_or_default();
    let within = match window.as_str() {
        "Total" => "in total".to_string(),
        month => format!("in {month}"),
    };
    if spent + reserved + amount > limit {
        let mut message = format!(
            "this host costs {} CNY; {} of {} spent {within}",
            shown(amount),
            shown(spent),
            shown(limit)
        );
        if !reserved.is_zero() {
            message.push_str(&format!(
                ", {} reserved for creates under way",
                shown(reserved)
            ));
        }
        message.push_str(&format!(" (RentedHostBudget {name})"));
        return Err(message);
    }
    let hosts = status.hosts.unwrap_or(0);
    let under_way = status.reservations.len() as u64;
    if let Some(max) = budget.spec.max_hosts
        && u64::from(hosts) + under_way + 1 > u64::from(max)
    {
        return Err(format!(
            "RentedHostBudget {name} allows {max} hosts {within}: {hosts} rented, {under_way} under way"
        ));
    }
    status.reservations.push(reservation);
    status.reserved = Some(money(held(&status)));
    Ok(status)
}

/// Takes the reservation of create (`uid`, `since`) out of `status`; `None` when it holds
/// none.
fn take(status: &mut RentedHostBudgetStatus, uid: &str, since: &str) -> Option<Reservation> {
    let i = status
        .reservations
        .iter()
        .position(|r| r.uid == uid && r.since == since)?;
    let taken = status.reservations.remove(i);
    status.reserved = Some(money(held(status)));
    Some(taken)
}

/// The create rented a host: its reservation becomes spend, unless it was held in a month
/// that has turned since (that month's spend is gone). `None` when nothing is held for it
/// (spent already, or made before the budget).
pub fn spend(
    budget: &RentedHostBudget,
    uid: &str,
    since: &str,
    now: Timestamp,
) -> Option<RentedHostBudgetStatus> {
    let mut status = current(budget, now);
    let taken = take(&mut status, uid, since)?;
    let window = status.window.clone().unwrap_or_default();
    if !turned(&taken.window, &window) {
        let spent = read(status.spent.as_deref()) + read(Some(&taken.amount));
        status.spent = Some(money(spent));
        status.hosts = Some(status.hosts.unwrap_or(0).saturating_add(1));
    }
    Some(status)
}

/// The create is proven not to have rented: its reservation is returned. `None` when
/// nothing is held for it.
pub fn give_back(
    budget: &RentedHostBudget,
    uid: &str,
    since: &str,
    now: Timestamp,
) -> Option<RentedHostBudgetStatus> {
    let mut status = current(budget, now);
    take(&mut status, uid, since)?;
    Some(status)
}

/// What becomes of a reservation whose create's recording can no longer land, by its
/// object as a quorum read shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// The object waits for that create: its outcome is not known yet.
    Keep,
    /// The create rented the object's host (or the object is gone, and may have had one).
    Spend,
    /// The object records no such create, or that it rented nothing.
    Return,
}

/// How the reservation of create (`uid`, `since`) is settled, given its object (`None`: no
/// object of that name). The object records the create (`createPending.since`) before
/// createRent is called, and the host it rented with that create's `since`
/// (`status.rentedSince`).
pub fn settle(uid: &str, since: &str, object: Option<&RentedHost>) -> Settle {
    let Some(object) = object.filter(|o| o.uid().as_deref() == Some(uid)) else {
        // Gone without its finalizer settling this (a crash, budgets unreadable): it may
        // have rented with this create, so the money counts.
        return Settle::Spend;
    };
    let status = object.status.as_ref();
    let pending = status.and_then(|s| s.create_pending.as_ref());
    if pending.is_some_and(|p| p.since == since) {
        return Settle::Keep;
    }
    match status.and_then(|s| s.rented_since.as_deref()) == Some(since) {
        true => Settle::Spend,
        false => Settle::Return,
    }
}

/// Reservations whose recording can no longer land: the sweep settles each by what its
/// object records.
pub fn expired(budget: &RentedHostBudget, now: Timestamp) -> Vec<Reservation> {
    let status = budget.status.clone().unwrap_or_default();
    status
        .reservations
        .into_iter()
        .filter(|r| r.expires.parse::<Timestamp>().is_ok_and(|at| at <= now))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RentedHostBudgetSpec;

    fn at(t: &str) -> Timestamp {
        t.parse().unwrap()
    }

    fn budget(limit: &str, window: BudgetWindow, max_hosts: Option<u32>) -> RentedHostBudget {
        RentedHostBudget::new(
            "team",
            RentedHostBudgetSpec {
                limit: IntOrString::String(limit.into()),
                window,
                max_hosts,
            },
        )
    }

    /// Spent, reserved, hosts.
    fn figures(status: &RentedHostBudgetStatus) -> (Option<&str>, Option<&str>, Option<u32>) {
        (
            status.spent.as_deref(),
            status.reserved.as_deref(),
            status.hosts,
        )
    }

    fn reservation(uid: &str, amount: &str, window: &str) -> Reservation {
        Reservation {
            object: format!("rh-{uid}"),
            uid: uid.into(),
            since: "2026-12-06T07:00:00Z".into(),
            amount: amount.into(),
            window: window.into(),
            expires: "2026-12-06T07:05:00Z".into(),
        }
    }

    #[test]
    fn windows_are_utc_months_or_total() {
        let now = at("2026-12-31T23:59:59Z");
        assert_eq!(window_at(BudgetWindow::Month, now), "2026-12");
        assert_eq!(window_at(BudgetWindow::Total, now), "Total");
        assert_eq!(
            window_end(BudgetWindow::Month, now),
            Some(at("2027-01-01T00:00:00Z"))
        );
        assert_eq!(window_end(BudgetWindow::Total, now), None);
        assert_eq!(
            window_at(BudgetWindow::Month, at("2027-01-01T00:00:00Z")),
            "2027-01"
        );
    }

    #[test]
    fn amounts_are_exact_and_shown_to_the_fen() {
        assert_eq!(money(Decimal::from_str("259.2").unwrap()), "259.20");
        assert_eq!(money(Decimal::from_str("0.09").unwrap()), "0.09");
        assert_eq!(money(Decimal::from_str("0.001").unwrap()), "0.001");
        assert_eq!(money(Decimal::from(1440)), "1440.00");
        assert_eq!(shown(Decimal::from_str("4900").unwrap()), "4,900.00");
        assert_eq!(
            shown(Decimal::from_str("1234567.891").unwrap()),
            "1,234,567.89"
        );
        assert_eq!(shown(Decimal::from_str("259.2").unwrap()), "259.20");
        let whole = RentedHostBudget {
            spec: RentedHostBudgetSpec {
                limit: IntOrString::Int(5000),
                ..budget("0", BudgetWindow::Month, None).spec
            },
            ..budget("0", BudgetWindow::Month, None)
        };
        assert_eq!(limit(&whole), Some(Decimal::from(5000)));
        assert_eq!(limit(&budget("5,000", BudgetWindow::Month, None)), None);
        assert_eq!(limit(&budget("-1", BudgetWindow::Month, None)), None);
    }

    #[test]
    fn creates_fit_until_spent_and_reserved_reach_the_limit() {
        let now = at("2026-12-06T07:00:00Z");
        let mut b = budget("1000", BudgetWindow::Month, None);
        for uid in ["a", "b", "c", "d"] {
            let status = reserve(&b, reservation(uid, "250", "2026-12"), now).unwrap();
            b.status = Some(status);
        }
        let status = b.status.clone().unwrap();
        assert_eq!(status.reserved.as_deref(), Some("1000.00"));
        assert_eq!(status.spent.as_deref(), Some("0.00"));
        let refused = reserve(&b, reservation("e", "0.01", "2026-12"), now).unwrap_err();
        assert_eq!(
            refused,
            "this host costs 0.01 CNY; 0.00 of 1,000.00 spent in 2026-12, 1,000.00 reserved for creates under way (RentedHostBudget team)"
        );
        // Held twice for one create: once.
        let again = reserve(&b, reservation("a", "250", "2026-12"), now).unwrap();
        assert_eq!(again.reservations.len(), 4);
        // Two spent, one returned: 250 of room.
        for (uid, spent) in [("a", true), ("b", true), ("c", false)] {
            let status = match spent {
                true => spend(&b, uid, "2026-12-06T07:00:00Z", now),
                false => give_back(&b, uid, "2026-12-06T07:00:00Z", now),
            };
            b.status = status;
        }
        let status = b.status.clone().unwrap();
        assert_eq!(figures(&status), (Some("500.00"), Some("250.00"), Some(2)));
        assert!(
            spend(&b, "a", "2026-12-06T07:00:00Z", now).is_none(),
            "spent once"
        );
        assert!(give_back(&b, "c", "2026-12-06T07:00:00Z", now).is_none());
        assert!(reserve(&b, reservation("e", "250", "2026-12"), now).is_ok());
        let refused = reserve(&b, reservation("e", "250.01", "2026-12"), now).unwrap_err();
        assert!(
            refused.starts_with("this host costs 250.01 CNY; 500.00 of 1,000.00 spent in 2026-12"),
            "{refused}"
        );
    }

    #[test]
    fn max_hosts_counts_hosts_rented_and_under_way() {
        let now = at("2026-12-06T07:00:00Z");
        let mut b = budget("100000", BudgetWindow::Total, Some(2));
        b.status = Some(reserve(&b, reservation("a", "1", "Total"), now).unwrap());
        b.status = spend(&b, "a", "2026-12-06T07:00:00Z", now);
        b.status = Some(reserve(&b, reservation("b", "1", "Total"), now).unwrap());
        let refused = reserve(&b, reservation("c", "1", "Total"), now).unwrap_err();
        assert_eq!(
            refused,
            "RentedHostBudget team allows 2 hosts in total: 1 rented, 1 under way"
        );
    }

    #[test]
    fn a_turned_month_starts_from_nothing_spent_and_keeps_what_is_held() {
        let mut b = budget("1000", BudgetWindow::Month, None);
        let nov = at("2026-11-30T23:59:00Z");
        b.status = Some(reserve(&b, reservation("a", "600", "2026-11"), nov).unwrap());
        b.status = spend(&b, "a", "2026-12-06T07:00:00Z", nov);
        let mut late = reservation("b", "300", "2026-11");
        late.since = "2026-11-30T23:59:30Z".into();
        b.status = Some(reserve(&b, late, nov).unwrap());
        let dec = at("2026-12-01T00:00:01Z");
        let status = current(&b, dec);
        assert_eq!(
            (
                status.window.as_deref(),
                status.spent.as_deref(),
                status.hosts
            ),
            (Some("2026-12"), Some("0.00"), Some(0))
        );
        assert_eq!(
            status.reserved.as_deref(),
            Some("300.00"),
            "still under way"
        );
        // November's create rented in December: it spent in November, gone now.
        let status = spend(&b, "b", "2026-11-30T23:59:30Z", dec).unwrap();
        assert_eq!(figures(&status), (Some("0.00"), Some("0.00"), Some(0)));
    }

    #[test]
    fn a_window_never_goes_back_and_a_change_of_kind_carries_what_was_spent() {
        let mut b = budget("1000", BudgetWindow::Month, None);
        let dec = at("2026-12-31T23:59:59Z");
        b.status = Some(reserve(&b, reservation("a", "100", ""), dec).unwrap());
        b.status = spend(&b, "a", "2026-12-06T07:00:00Z", dec);
        let jan = at("2027-01-01T00:00:01Z");
        b.status = Some(current(&b, jan));
        b.status = Some(reserve(&b, reservation("b", "50", ""), jan).unwrap());
        b.status = spend(&b, "b", "2026-12-06T07:00:00Z", jan);
        // A replica whose clock is still in December: January's spend stays.
        let behind = current(&b, dec);
        assert_eq!(
            (behind.window.as_deref(), behind.spent.as_deref()),
            (Some("2027-01"), Some("50.00"))
        );
        // Month to Total and back: what was spent is carried over.
        b.spec.window = BudgetWindow::Total;
        let total = current(&b, jan);
        assert_eq!(
            (total.window.as_deref(), total.spent.as_deref()),
            (Some("Total"), Some("50.00"))
        );
        b.status = Some(total);
        // A reservation held in a month is spent in Total: nothing turned.
        b.status = Some(reserve(&b, reservation("c", "25", ""), jan).unwrap());
        assert_eq!(b.status.as_ref().unwrap().reservations[0].window, "Total");
        let mut held_in_month = b.status.clone().unwrap();
        held_in_month.reservations[0].window = "2027-01".into();
        b.status = Some(held_in_month);
        b.status = spend(&b, "c", "2026-12-06T07:00:00Z", jan);
        assert_eq!(b.status.as_ref().unwrap().spent.as_deref(), Some("75.00"));
        b.spec.window = BudgetWindow::Month;
        let month = current(&b, jan);
        assert_eq!(
            (month.window.as_deref(), month.spent.as_deref()),
            (Some("2027-01"), Some("75.00"))
        );
    }

    #[test]
    fn the_sweep_settles_by_what_the_object_records() {
        use crate::api::{CreatePending, RentedHostStatus};
        let r = reservation("uid-1", "100", "2026-12");
        let object = |status: RentedHostStatus| {
            let mut o = crate::controller::decision::testing::obj(Some(status));
            o.metadata.uid = Some("uid-1".into());
            o
        };
        let pending = |since: &str| RentedHostStatus {
            create_pending: Some(CreatePending {
                since: since.into(),
                request: None,
                call_ended: None,
                deadline: None,
                asked_at: None,
            }),
            ..Default::default()
        };
        let rented = |since: &str| RentedHostStatus {
            host_id: Some("h1".into()),
            rented_since: Some(since.into()),
            ..Default::default()
        };
        assert_eq!(
            settle(&r.uid, &r.since, Some(&object(pending(&r.since)))),
            Settle::Keep
        );
        assert_eq!(
            settle(&r.uid, &r.since, Some(&object(rented(&r.since)))),
            Settle::Spend
        );
        assert_eq!(
            settle(
                &r.uid,
                &r.since,
                Some(&object(rented("2026-12-06T08:00:00Z")))
            ),
            Settle::Return,
            "rented by a later create: this one was never recorded"
        );
        assert_eq!(
            settle(
                &r.uid,
                &r.since,
                Some(&object(pending("2026-12-06T08:00:00Z")))
            ),
            Settle::Return
        );
        assert_eq!(
            settle(&r.uid, &r.since, Some(&object(RentedHostStatus::default()))),
            Settle::Return
        );
        assert_eq!(
            settle(&r.uid, &r.since, None),
            Settle::Spend,
            "gone: it may have rented"
        );
        let mut other = object(rented(&r.since));
        other.metadata.uid = Some("uid-2".into());
        assert_eq!(
            settle(&r.uid, &r.since, Some(&other)),
            Settle::Spend,
            "another object of that name"
        );
    }

    #[test]
    fn an_unreadable_limit_refuses() {
        let b = budget("lots", BudgetWindow::Month, None);
        let now = at("2026-12-06T07:00:00Z");
        assert!(
            reserve(&b, reservation("a", "1", "2026-12"), now)
                .unwrap_err()
                .contains("cannot be read")
        );
    }

    #[test]
    fn only_reservations_past_their_expiry_are_swept() {
        let mut b = budget("1000", BudgetWindow::Month, None);
        let now = at("2026-12-06T07:00:00Z");
        b.status = Some(reserve(&b, reservation("a", "1", "2026-12"), now).unwrap());
        assert!(expired(&b, at("2026-12-06T07:04:59Z")).is_empty());
        assert_eq!(expired(&b, at("2026-12-06T07:05:00Z")).len(), 1);
    }
}
