//! Resolving createRent calls whose answer was lost, as a pure function of the account's
//! pending creates, its complete host listing and the hosts claimed by objects.
//!
//! Hosts made from the same request are interchangeable: the pending creates of one
//! request are paired with the unclaimed hosts that match it, oldest pending with oldest
//! host, each host within its create's time window. Only when more such hosts appeared
//! than creates were waiting for them (someone else rents on the account) is a person asked.

use crate::account::Catalogued;
use crate::api::CreateRequest;
use crate::provider::{Billing, Host, Image, Package};
use jiff::Timestamp;
use std::collections::HashSet;
use std::time::Duration;

/// One object's pending create, as recorded in its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCreate {
    /// `namespace/name` of the object.
    pub key: String,
    pub since: Timestamp,
    /// When the call ended without an answer; `None` if the operator stopped during it.
    pub call_ended: Option<Timestamp>,
    /// The latest the call could have ended, as recorded when it began.
    pub deadline: Option<Timestamp>,
    pub request: CreateRequest,
}

/// What the provider's catalogue says a request's host looks like.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expected<'a> {
    pub package: Option<&'a Package>,
    pub image: Option<&'a Image>,
}

impl<'a> Expected<'a> {
    /// What the account's catalogue says.
    pub fn of(catalogued: &'a Catalogued) -> Expected<'a> {
        Expected {
            package: catalogued.package.as_ref(),
            image: catalogued.image.as_ref(),
        }
    }
}

/// Time allowances of the window in which a create's host can appear.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Clock difference allowed between us and the provider.
    pub skew: Duration,
    /// Longest a createRent call can last (the client's timeout): the end of a call whose
    /// end was not recorded.
    pub call_limit: Duration,
}

/// The outcome for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// This host is the object's: adopt it.
    Adopt(String),
    /// No host for this object: nothing unclaimed appeared in its window (yet).
    NoHost,
    /// More matching hosts appeared than creates were waiting for them: these are the
    /// candidates in this object's window.
    Ambiguous(Vec<String>),
}

/// How a listed host without an id is named among candidates.
const NO_ID: &str = "(a host listed without an id)";

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PendingCreate {
    /// The pending create an object records, if any.
    pub fn of(obj: &crate::api::RentedHost) -> Option<PendingCreate> {
        use kube::Resource;
        let pending = obj.status.as_ref()?.create_pending.as_ref()?;
        let parse = |s: &str| s.parse::<Timestamp>().ok();
        // Without a readable time, every host since the object's creation is a candidate.
        let since = parse(&pending.since)
            .or_else(|| obj.meta().creation_timestamp.as_ref().map(|t| t.0))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        Some(PendingCreate {
            key: crate::controller::ledger::object_key(obj),
            since,
            call_ended: pending.call_ended.as_deref().and_then(parse),
            deadline: pending.deadline.as_deref().and_then(parse),
            request: pending
                .request
                .clone()
                .unwrap_or_else(|| CreateRequest::of(&obj.spec)),
        })
    }

    /// When the call ended, or the latest it can have ended.
    pub fn call_end(&self, w: Window) -> Timestamp {
        self.call_ended
            .or(self.deadline)
            .unwrap_or_else(|| self.since + w.call_limit)
            .max(self.since)
    }

    /// [since − skew, end of the call + skew], in epoch milliseconds.
    fn window(&self, w: Window) -> (i64, i64) {
        (
            self.since.as_millisecond() - millis(w.skew),
            self.call_end(w).as_millisecond() + millis(w.skew),
        )
    }

    /// Whether a host created at `created` (epoch ms) can be this create's.
    pub fn admits(&self, w: Window, created: i64) -> bool {
        let (from, to) = self.window(w);
        (from..=to).contains(&created)
    }
}

fn differ_text(a: &Option<String>, b: &Option<String>) -> bool {
    matches!((a.as_deref(), b.as_deref()), (Some(a), Some(b)) if a.trim() != b.trim())
}

/// Whether a host can be the one `request` rented: every field the host shows agrees with
/// the request (a field the provider left out cannot rule a host out).
pub fn matches(host: &Host, request: &CreateRequest, expected: Expected<'_>) -> bool {
    let differ = |a: Option<i64>, b: Option<i64>| matches!((a, b), (Some(a), Some(b)) if a != b);
    if host.billing().is_some_and(|b| b != Billing::Prepaid) {
        return false;
    }
    if let Some(p) = expected.package
        && (differ(host.cpu, p.cpu_number)
            || differ(host.memory, p.memory_number)
            || differ(host.rigid_disk, p.rigid_disk_number)
            || differ(host.gpu_number, p.gpu_number.or(Some(0)))
            || differ_text(&host.area, &p.area)
            || differ_text(&host.pve_machine_type, &p.pve_machine_type))
    {
        return false;
    }
    let image_name = expected
        .image
        .and_then(|i| i.system_image_name.as_deref())
        .map(str::trim);
    // The host may show the image's name in short ("Windows" for "Windows Server").
    if let (Some(want), Some(shown)) = (image_name, host.operating_system.as_deref()) {
        let (want, shown) = (want.to_lowercase(), shown.trim().to_lowercase());
        if !(want.contains(&shown) || shown.contains(&want)) {
            return false;
        }
    }
    if let (Some(created), Some(expires)) = (host.create_time, host.expiration_time) {
        let (short, long) = crate::provider::period::span_hours(request.period.unit);
        let count = f64::from(request.period.count);
        let hours = (expires - created) as f64 / 3_600_000.0;
        // An hour of slack for the provider's rounding.
        if hours < short * count - 1.0 || hours > long * count + 1.0 {
            return false;
        }
    }
    true
}

/// Another pending create of the account, with what its request's host looks like.
pub type Other<'a> = (PendingCreate, Expected<'a>);

/// The account as a resolution sees it, at one moment.
#[derive(Clone, Copy)]
pub struct Account<'a> {
    /// Every other pending create of the account (read by quorum).
    pub others: &'a [Other<'a>],
    /// The complete listing.
    pub hosts: &'a [Host],
    /// Every host id an object that manages its host claims.
    pub claimed: &'a HashSet<String>,
    /// Host ids claimed only by observe-only objects: observing never hides a host from the
    /// create that may have made it, so such a host is a person's to place.
    pub observed: &'a HashSet<String>,
    pub window: Window,
    pub now: Timestamp,
    /// Whether every claim on the account is in sight, so that a host nobody claims is
    /// nobody's: an install that cannot see them all (namespaced, or sharing the account)
    /// never pairs, and leaves any unclaimed host in the window to a person.
    pub pairing: bool,
}

/// The resolution of the pending create of object `me`, whose host looks as `expected`.
pub fn resolve(me: &PendingCreate, expected: Expected<'_>, account: Account<'_>) -> Resolution {
    let Account {
        others,
        hosts,
        claimed,
        observed,
        window,
        now,
        pairing,
    } = account;
    let mut group: Vec<&PendingCreate> = others
        .iter()
        .map(|(p, _)| p)
        .filter(|p| p.request == me.request && p.key != me.key)
        .chain(std::iter::once(me))
        .collect();
    // Windows are taken in order of their end, each pairing with the oldest free host in
    // it: for hosts (points) and windows (intervals) that order pairs as many as possible,
    // so no create goes without a host while one of its window's hosts stays unpaired.
    group.sort_by(|a, b| {
        (a.window(window).1, a.since, &a.key).cmp(&(b.window(window).1, b.since, &b.key))
    });
    let unclaimed: Vec<(&str, &Host)> = hosts
        .iter()
        .map(|h| (h.id.as_deref().unwrap_or(NO_ID), h))
        .filter(|(id, _)| !claimed.contains(*id))
        .collect();
    // A host whose creation time cannot be read may be in any window, and one without an id
    // can be neither adopted nor ruled out: either blocks pairing and a new create.
    let unplaceable: Vec<&str> = unclaimed
        .iter()
        .filter(|(id, h)| *id == NO_ID || h.create_time.is_none())
        .filter(|(_, h)| matches(h, &me.request, expected))
        .map(|(id, _)| *id)
        .collect();
    let mut timed: Vec<(&str, i64)> = unclaimed
        .iter()
        .filter(|(id, _)| *id != NO_ID)
        .filter(|(_, h)| matches(h, &me.request, expected))
        .filter_map(|(id, h)| Some((*id, h.create_time?)))
        .filter(|(_, t)| group.iter().any(|p| p.admits(window, *t)))
        .collect();
    timed.sort_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
    timed.dedup();
    let named = |ids: Vec<&str>| -> Vec<String> {
        let mut ids: Vec<String> = ids.into_iter().map(str::to_string).collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let in_my_window = || {
        timed
            .iter()
            .filter(|(_, t)| me.admits(window, *t))
            .map(|(id, _)| *id)
            .chain(unplaceable.iter().copied())
            .collect::<Vec<_>>()
    };
    let from = me.window(window).0;
    // Any rental host that appeared since `since`, whatever it looks like (a field the
    // catalogue words differently, a commit later than the call).
    let appeared_since = |h: &Host, since: i64| {
        h.billing() != Some(Billing::PayAsYouGo)
            && h.create_time
                .is_none_or(|t| t >= since && t <= now.as_millisecond() + millis(window.skew))
    };
    let appeared = |h: &Host| appeared_since(h, from);
    // An observed host any create of the group may have made stops the whole group: were
    // only the creates whose windows hold it to stop, the others would pair among
    // themselves as if it were not there, and disagree with them about the rest.
    let group_from = group
        .iter()
        .map(|p| p.window(window).0)
        .min()
        .unwrap_or(from);
    let watched: Vec<&str> = unclaimed
        .iter()
        .filter(|(id, h)| observed.contains(*id) && appeared_since(h, group_from))
        .map(|(id, _)| *id)
        .collect();
    if !watched.is_empty() || !pairing {
        // Only the absence of any host at all allows a new create; anything else, a person
        // judges (a host someone observes may be this create's, and in an install that does
        // not see every claim, any host may be someone else's).
        let seen: Vec<&str> = unclaimed
            .iter()
            .filter(|(_, h)| appeared(h))
            .map(|(id, _)| *id)
            .collect();
        let seen = match seen.is_empty() {
            // Nothing appeared since this create began: no host can be its.
            true => seen,
            false => seen.into_iter().chain(watched.iter().copied()).collect(),
        };
        return match seen.is_empty() {
            true => Resolution::NoHost,
            false => Resolution::Ambiguous(named(seen)),
        };
    }
    // Without the package's configuration nothing tells this request's hosts from others.
    let unverifiable = expected.package.is_none();
    if !unplaceable.is_empty() || timed.len() > group.len() || (unverifiable && !timed.is_empty()) {
        let candidates = in_my_window();
        if !candidates.is_empty() {
            return Resolution::Ambiguous(named(candidates));
        }
    } else {
        let mut taken = vec![false; timed.len()];
        for p in &group {
            let pick = timed
                .iter()
                .enumerate()
                .find(|(i, (_, t))| !taken[*i] && p.admits(window, *t))
                .map(|(i, _)| i);
            if let Some(i) = pick {
                taken[i] = true;
                if p.key == me.key {
                    return Resolution::Adopt(timed[i].0.to_string());
                }
            }
        }
    }
    // No host for this create. A new create is allowed only if no unclaimed rental host at
    // all appeared since it began, whatever it looks like (a field the catalogue words
    // differently, a commit later than the call), except the hosts another pending create
    // pairs with: anything else is for a person to judge.
    let paired_elsewhere = |id: &str, h: &Host| {
        timed.iter().any(|(t, _)| *t == id)
            || others.iter().any(|(p, x)| {
                p.request != me.request
                    && matches(h, &p.request, *x)
                    && h.create_time.is_some_and(|t| p.admits(window, t))
            })
    };
    let strays: Vec<&str> = unclaimed
        .iter()
        .filter(|(_, h)| appeared(h))
        .filter(|(id, h)| !paired_elsewhere(id, h))
        .map(|(id, _)| *id)
        .collect();
    if strays.is_empty() {
        Resolution::NoHost
    } else {
        Resolution::Ambiguous(named(strays))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PeriodUnit, RentalPeriod};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn request() -> CreateRequest {
        CreateRequest {
            package_id: "teTapaSUFq".into(),
            image_id: "507".into(),
            period: RentalPeriod {
                count: 5,
                unit: PeriodUnit::Month,
            },
        }
    }

    fn pending(key: &str, since: i64, ended: Option<i64>) -> PendingCreate {
        PendingCreate {
            key: key.into(),
            since: t(since),
            call_ended: ended.map(t),
            deadline: None,
            request: request(),
        }
    }

    fn package() -> Package {
        Package {
            package_id: Some("teTapaSUFq".into()),
            area: Some("0".into()),
            pve_machine_type: Some("1".into()),
            cpu_number: Some(8),
            memory_number: Some(32),
            rigid_disk_number: Some(128),
            gpu_number: Some(1),
            ..Default::default()
        }
    }

    fn image() -> Image {
        Image {
            image_id: Some("507".into()),
            system_image_name: Some("Windows Server".into()),
            ..Default::default()
        }
    }

    fn host(id: &str, created: i64) -> Host {
        let created = t(created).as_millisecond();
        Host {
            id: Some(id.into()),
            cpu: Some(8),
            memory: Some(32),
            rigid_disk: Some(128),
            gpu_number: Some(1),
            operating_system: Some("Windows Server".into()),
            use_type: Some("1".into()),
            area: Some("0".into()),
            pve_machine_type: Some("1".into()),
            create_time: Some(created),
            expiration_time: Some(created + 5 * 720 * 3_600_000),
            ..Default::default()
        }
    }

    /// The resolution of `me`, the only pending create, with `host` the only host.
    fn alone(me: &PendingCreate, host: Host) -> Resolution {
        run(me, &[], &[host], &[])
    }

    fn edited(mut host: Host, edit: impl FnOnce(&mut Host)) -> Host {
        edit(&mut host);
        host
    }

    const W: Window = Window {
        skew: Duration::from_secs(2),
        call_limit: Duration::from_secs(15),
    };

    /// The account at t(60), with windows of `W`.
    fn at<'a>(
        others: &'a [Other<'a>],
        hosts: &'a [Host],
        claimed: &'a HashSet<String>,
    ) -> Account<'a> {
        static NONE: std::sync::LazyLock<HashSet<String>> = std::sync::LazyLock::new(HashSet::new);
        Account {
            others,
            hosts,
            claimed,
            observed: &NONE,
            window: W,
            now: t(60),
            pairing: true,
        }
    }

    fn run(
        me: &PendingCreate,
        all: &[PendingCreate],
        hosts: &[Host],
        claimed: &[&str],
    ) -> Resolution {
        let (p, i) = (package(), image());
        let claimed = claimed.iter().map(|s| s.to_string()).collect();
        let expected = Expected {
            package: Some(&p),
            image: Some(&i),
        };
        let others: Vec<Other<'_>> = all.iter().map(|o| (o.clone(), expected)).collect();
        resolve(me, expected, at(&others, hosts, &claimed))
    }

    #[test]
    fn one_create_one_host_adopts_it() {
        let me = pending("ns/a", 0, Some(3));
        assert_eq!(
            run(&me, &[], &[host("old", -600), host("h1", 1)], &[]),
            Resolution::Adopt("h1".into())
        );
    }

    #[test]
    fn the_window_is_bounded_on_both_sides() {
        let me = pending("ns/a", 0, Some(3));
        let asked = Resolution::Ambiguous(vec!["h".into()]);
        // Before the call: someone else's. After it: not adopted, but a late commit may be
        // ours, so no new create either: a person decides.
        for (created, want) in [(-3, Resolution::NoHost), (6, asked.clone())] {
            assert_eq!(
                run(&me, &[], &[host("h", created)], &[]),
                want,
                "created at {created}"
            );
        }
        // The end of a call that was never recorded is bounded by the call limit, or by
        // the deadline recorded when it began.
        let crashed = pending("ns/a", 0, None);
        assert_eq!(
            run(&crashed, &[], &[host("h", 16)], &[]),
            Resolution::Adopt("h".into())
        );
        assert_eq!(run(&crashed, &[], &[host("h", 18)], &[]), asked);
        let recorded = PendingCreate {
            deadline: Some(t(30)),
            ..crashed
        };
        assert_eq!(
            run(&recorded, &[], &[host("h", 31)], &[]),
            Resolution::Adopt("h".into())
        );
    }

    #[test]
    fn no_new_create_while_any_unclaimed_rental_host_appeared() {
        let me = pending("ns/a", 0, Some(3));
        let mut office = host("o", 20);
        office.cpu = Some(4);
        let mut payg = host("p", 20);
        payg.use_type = Some("0".into());
        assert_eq!(
            run(&me, &[], &[office.clone(), payg], &[]),
            Resolution::Ambiguous(vec!["o".into()]),
            "a rental host of any shape blocks a new create; pay-as-you-go does not"
        );
        // ... unless another pending create of its shape pairs with it.
        let mut theirs = pending("ns/b", 10, Some(25));
        theirs.request.package_id = "office".into();
        let office_package = Package {
            cpu_number: Some(4),
            ..package()
        };
        let i = image();
        let p = package();
        let expected = Expected {
            package: Some(&p),
            image: Some(&i),
        };
        let others = [(
            theirs,
            Expected {
                package: Some(&office_package),
                image: Some(&i),
            },
        )];
        let got = resolve(&me, expected, at(&others, &[office], &HashSet::new()));
        assert_eq!(got, Resolution::NoHost);
    }

    #[test]
    fn every_field_the_host_shows_must_match() {
        let me = pending("ns/a", 0, Some(3));
        type Change = Box<dyn Fn(&mut Host)>;
        let variants: Vec<(&str, Change)> = vec![
            ("cpu", Box::new(|h| h.cpu = Some(4))),
            ("gpu", Box::new(|h| h.gpu_number = Some(2))),
            (
                "image",
                Box::new(|h| h.operating_system = Some("Ubuntu Server".into())),
            ),
            ("pay-as-you-go", Box::new(|h| h.use_type = Some("0".into()))),
            ("area", Box::new(|h| h.area = Some("2".into()))),
            (
                "machine type",
                Box::new(|h| h.pve_machine_type = Some("2".into())),
            ),
            (
                "period",
                Box::new(|h| h.expiration_time = h.create_time.map(|c| c + 720 * 3_600_000)),
            ),
            // A field left out cannot rule a host out.
            (
                "fields left out",
                Box::new(|h| {
                    (h.operating_system, h.expiration_time, h.gpu_number) = (None, None, None)
                }),
            ),
            (
                "the image's name in short",
                Box::new(|h| h.operating_system = Some("windows".into())),
            ),
        ];
        for (what, change) in variants {
            let h = edited(host("h", 1), change);
            // Not adopted; and, being a rental host that appeared, not created past either.
            let want = match what {
                "fields left out" | "the image's name in short" => Resolution::Adopt("h".into()),
                "pay-as-you-go" => Resolution::NoHost,
                _ => Resolution::Ambiguous(vec!["h".into()]),
            };
            assert_eq!(alone(&me, h), want, "{what}");
        }
    }

    #[test]
    fn claimed_hosts_are_never_candidates() {
        let me = pending("ns/a", 0, Some(3));
        assert_eq!(run(&me, &[], &[host("h1", 1)], &["h1"]), Resolution::NoHost);
    }

    #[test]
    fn pending_creates_of_one_request_pair_oldest_with_oldest() {
        let all = [
            pending("ns/c", 2, Some(5)),
            pending("ns/a", 0, Some(4)),
            pending("ns/b", 1, Some(4)),
        ];
        let hosts = [host("z", 3), host("y", 1), host("x", 2)];
        let got: Vec<Resolution> = all.iter().map(|me| run(me, &all, &hosts, &[])).collect();
        assert_eq!(
            got,
            vec![
                Resolution::Adopt("z".into()),
                Resolution::Adopt("y".into()),
                Resolution::Adopt("x".into())
            ]
        );
        // After a's pairing is written, b and c resolve the same way.
        let rest = [all[0].clone(), all[2].clone()];
        assert_eq!(
            run(&all[2], &rest, &hosts, &["y"]),
            Resolution::Adopt("x".into())
        );
        // Fewer hosts than creates: the newest create gets none.
        let two = [host("y", 1), host("x", 2)];
        assert_eq!(run(&all[0], &all, &two, &[]), Resolution::NoHost);
    }

    #[test]
    fn pairing_by_window_end_leaves_no_create_without_its_host() {
        // a's call ran long, b's failed fast; b's host was made before a's.
        let all = [pending("ns/a", 0, Some(15)), pending("ns/b", 1, Some(2))];
        let hosts = [host("hb", 2), host("ha", 14)];
        let got: Vec<Resolution> = all.iter().map(|me| run(me, &all, &hosts, &[])).collect();
        assert_eq!(
            got,
            vec![
                Resolution::Adopt("ha".into()),
                Resolution::Adopt("hb".into())
            ]
        );
    }

    #[test]
    fn a_host_without_an_id_blocks_pairing_and_a_new_create() {
        let me = pending("ns/a", 0, Some(3));
        let mut h = host("x", 1);
        h.id = None;
        assert!(matches!(alone(&me, h), Resolution::Ambiguous(_)));
    }

    #[test]
    fn more_hosts_than_creates_is_ambiguous_and_names_them() {
        let me = pending("ns/a", 0, Some(3));
        assert_eq!(
            run(&me, &[], &[host("h2", 2), host("h1", 1)], &[]),
            Resolution::Ambiguous(vec!["h1".into(), "h2".into()])
        );
    }

    #[test]
    fn an_unreadable_creation_time_or_package_fails_closed() {
        let me = pending("ns/a", 0, Some(3));
        let mut h = host("h", 1);
        h.create_time = None;
        assert_eq!(alone(&me, h), Resolution::Ambiguous(vec!["h".into()]));
        let claimed = HashSet::new();
        let no_package = resolve(&me, Expected::default(), at(&[], &[host("h", 1)], &claimed));
        assert_eq!(no_package, Resolution::Ambiguous(vec!["h".into()]));
    }

    #[test]
    fn other_requests_are_separate_groups() {
        let me = pending("ns/a", 0, Some(3));
        let mut other = pending("ns/b", 0, Some(3));
        other.request.period.count = 1;
        assert_eq!(
            run(&me, &[other], &[host("h", 1)], &[]),
            Resolution::Adopt("h".into())
        );
    }

    #[test]
    fn a_host_only_observed_is_left_to_a_person_never_hidden() {
        let me = pending("ns/a", 0, Some(3));
        let (p, i) = (package(), image());
        let expected = Expected {
            package: Some(&p),
            image: Some(&i),
        };
        let observed: HashSet<String> = ["h1".to_string()].into();
        let claimed = HashSet::new();
        let hosts = [host("h1", 1)];
        let account = Account {
            observed: &observed,
            ..at(&[], &hosts, &claimed)
        };
        assert_eq!(
            resolve(&me, expected, account),
            Resolution::Ambiguous(vec!["h1".into()]),
            "neither adopted nor hidden (a new create would rent twice)"
        );
        // A host observed since before the call is someone else's, as any older host.
        let old = [host("h1", -600)];
        let account = Account {
            observed: &observed,
            ..at(&[], &old, &claimed)
        };
        assert_eq!(resolve(&me, expected, account), Resolution::NoHost);
    }

    #[test]
    fn a_host_observed_in_any_window_of_the_group_stops_the_whole_group() {
        // p0's window holds the observed host; mine does not, but holds hX: pairing among
        // the rest would give hX to p0 while p0 itself stops, and leave mine creating again.
        let p0 = pending("ns/p0", -30, Some(60));
        let me = pending("ns/me", 30, Some(120));
        let (p, i) = (package(), image());
        let expected = Expected {
            package: Some(&p),
            image: Some(&i),
        };
        let others: Vec<Other<'_>> = vec![(p0.clone(), expected)];
        let observed: HashSet<String> = ["h-obs".to_string()].into();
        let claimed = HashSet::new();
        let hosts = [host("h-obs", 10), host("hX", 65)];
        let account = Account {
            observed: &observed,
            now: t(200),
            ..at(&others, &hosts, &claimed)
        };
        assert_eq!(
            resolve(&me, expected, account),
            Resolution::Ambiguous(vec!["h-obs".into(), "hX".into()])
        );
        let mine: Vec<Other<'_>> = vec![(me.clone(), expected)];
        let account = Account {
            observed: &observed,
            now: t(200),
            ..at(&mine, &hosts, &claimed)
        };
        assert!(matches!(
            resolve(&p0, expected, account),
            Resolution::Ambiguous(_)
        ));
    }

    #[test]
    fn an_install_that_cannot_see_every_claim_never_pairs() {
        let me = pending("ns/a", 0, Some(3));
        let (p, i) = (package(), image());
        let expected = Expected {
            package: Some(&p),
            image: Some(&i),
        };
        let claimed = HashSet::new();
        let shared = |hosts: &[Host]| {
            let account = Account {
                pairing: false,
                ..at(&[], hosts, &claimed)
            };
            resolve(&me, expected, account)
        };
        assert_eq!(
            shared(&[host("h1", 1)]),
            Resolution::Ambiguous(vec!["h1".into()]),
            "a matching host may be another install's"
        );
        let mut office = host("o", 20);
        office.cpu = Some(4);
        assert_eq!(shared(&[office]), Resolution::Ambiguous(vec!["o".into()]));
        assert_eq!(
            shared(&[host("old", -600)]),
            Resolution::NoHost,
            "no host at all in the window: a new create is safe"
        );
    }
}
