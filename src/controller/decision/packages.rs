//! Which package a create asks for: `spec.packageId`, then each of
//! `spec.fallbackPackageIds` in turn after a 6002 (insufficient resources), skipping those
//! the provider refused with 7005 for the spec's image.

use super::*;
use crate::api::SkippedPackages;

/// The packages a create may ask for, in order, without those refused (7005) for the
/// spec's image.
fn askable(obj: &RentedHost) -> Vec<&str> {
    let skipped = obj
        .status
        .as_ref()
        .and_then(|s| s.skipped_packages.as_ref())
        .filter(|s| s.image_id == obj.spec.image_id);
    let refused = |p: &&str| skipped.is_some_and(|s| s.package_ids.iter().any(|x| x == p));
    obj.spec
        .packages()
        .into_iter()
        .filter(|p| !refused(p))
        .collect()
}

/// The package the next create asks for: the one the status names while a create may ask
/// for it, else the first that may be asked for; `None` when the provider refused every
/// package for the image (7005).
pub fn next_package(obj: &RentedHost) -> Option<String> {
    let askable = askable(obj);
    // Named for this generation: a changed spec starts from its first package. (After a
    // budget's refusal the package stays: going back to a first one that answered 6002
    // would send a createRent at every change of a budget.)
    let status = obj
        .status
        .as_ref()
        .filter(|s| s.observed_generation == obj.metadata.generation);
    let named = status
        .and_then(|s| s.package_id.as_deref())
        .filter(|p| askable.contains(p));
    named.or(askable.first().copied()).map(str::to_string)
}

/// The package a pending (or just refused) create asked for.
pub(super) fn asked(obj: &RentedHost) -> String {
    obj.status
        .as_ref()
        .and_then(|s| s.create_pending.as_ref())
        .and_then(|p| p.request.as_ref())
        .map(|r| r.package_id.clone())
        .unwrap_or_else(|| obj.spec.package_id.clone())
}

/// What a refusal of the create that asked for `asked` leaves to ask for next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum After {
    /// The same package again, after the reason's backoff.
    Same,
    /// The next package in `spec.fallbackPackageIds` order, at once.
    Next(String),
    /// The packages went round: back to the first, after the backoff.
    Round(String),
    /// Every package was refused for the image (7005): nothing left to ask for.
    None,
}

/// Records a refusal of the create that asked for `asked` in `status` (the 7005 skip and
/// the package the next create asks for), and says what comes next.
pub(super) fn after_refusal(
    obj: &RentedHost,
    status: &mut RentedHostStatus,
    asked: &str,
    reason: Reason,
) -> After {
    let moves_on = matches!(reason, Reason::InsufficientResources | Reason::TypeMismatch);
    if !moves_on {
        status.package_id = Some(asked.to_string());
        return After::Same;
    }
    if reason == Reason::TypeMismatch {
        let image = &obj.spec.image_id;
        let skipped = status
            .skipped_packages
            .get_or_insert_with(|| SkippedPackages {
                image_id: image.clone(),
                package_ids: Vec::new(),
            });
        if &skipped.image_id != image {
            *skipped = SkippedPackages {
                image_id: image.clone(),
                package_ids: Vec::new(),
            };
        }
        if !skipped.package_ids.iter().any(|p| p == asked) {
            skipped.package_ids.push(asked.to_string());
        }
    }
    let mut view = obj.clone();
    view.status = Some(status.clone());
    let askable = askable(&view);
    let order = obj.spec.packages();
    let position = |p: &str| order.iter().position(|x| *x == p);
    let after = position(asked);
    let later = askable
        .iter()
        .find(|p| after.is_some_and(|a| position(p).is_some_and(|i| i > a)));
    let (next, after) = match (later, askable.first()) {
        (Some(next), _) => (Some(next), After::Next(next.to_string())),
        (None, Some(first)) if *first == asked => (Some(first), After::Same),
        (None, Some(first)) => (Some(first), After::Round(first.to_string())),
        (None, None) => (None, After::None),
    };
    status.package_id = next.map(|p| p.to_string());
    after
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::decision::testing::*;

    fn with_fallbacks(fallbacks: &[&str]) -> RentedHost {
        let mut o = obj(None);
        o.spec.fallback_package_ids = fallbacks.iter().map(|p| p.to_string()).collect();
        o
    }

    /// The refusal of a create asking for `asked` with `code`, on `o`.
    fn refuse(o: &RentedHost, asked: &str, code: i64) -> (RentedHostStatus, After) {
        let mut status = o.status.clone().unwrap_or_default();
        status.observed_generation = o.metadata.generation;
        let a = after_refusal(o, &mut status, asked, Reason::of(&business(code)));
        (status, a)
    }

    #[test]
    fn the_first_create_asks_for_the_package_id() {
        let o = with_fallbacks(&["B", "C"]);
        assert_eq!(next_package(&o).as_deref(), Some("teTapaSUFq"));
        assert_eq!(
            o.spec.packages(),
            ["teTapaSUFq", "B", "C"],
            "the order of the spec"
        );
        let mut doubled = with_fallbacks(&["B", "teTapaSUFq", "B"]);
        assert_eq!(doubled.spec.packages(), ["teTapaSUFq", "B"], "each once");
        doubled.status = Some(RentedHostStatus {
            package_id: Some("gone".into()),
            ..Default::default()
        });
        assert_eq!(
            next_package(&doubled).as_deref(),
            Some("teTapaSUFq"),
            "a package the spec no longer names is not asked for"
        );
    }

    #[test]
    fn insufficient_resources_moves_to_the_next_package_then_round_to_the_first() {
        let mut o = with_fallbacks(&["B", "C"]);
        let mut seen = Vec::new();
        for asked in ["teTapaSUFq", "B", "C"] {
            assert_eq!(next_package(&o).as_deref(), Some(asked));
            let (status, after) = refuse(&o, asked, 6002);
            seen.push(after);
            o.status = Some(status);
        }
        assert_eq!(
            seen,
            [
                After::Next("B".into()),
                After::Next("C".into()),
                After::Round("teTapaSUFq".into())
            ]
        );
        assert_eq!(next_package(&o).as_deref(), Some("teTapaSUFq"));
        let single = obj(None);
        assert_eq!(
            refuse(&single, "teTapaSUFq", 6002).1,
            After::Same,
            "without fallbacks, as before: the same package after the backoff"
        );
    }

    #[test]
    fn other_refusals_ask_for_the_same_package_again() {
        let o = with_fallbacks(&["B"]);
        for code in [6005, 9001, 9000, 1037, 1003] {
            let (status, after) = refuse(&o, "B", code);
            assert_eq!(after, After::Same, "{code}");
            assert_eq!(status.package_id.as_deref(), Some("B"), "{code}");
        }
    }

    #[test]
    fn a_type_mismatch_skips_the_package_for_the_image_only() {
        let mut o = with_fallbacks(&["B", "C"]);
        let (status, after) = refuse(&o, "B", 7005);
        assert_eq!(after, After::Next("C".into()));
        let skipped = status.skipped_packages.clone().unwrap();
        assert_eq!(
            (skipped.image_id.as_str(), &skipped.package_ids[..]),
            ("507", &["B".to_string()][..])
        );
        o.status = Some(status);
        // C at capacity: round to the first, never B again.
        let (status, after) = refuse(&o, "C", 6002);
        assert_eq!(after, After::Round("teTapaSUFq".into()));
        o.status = Some(status);
        let (status, after) = refuse(&o, "teTapaSUFq", 6002);
        assert_eq!(after, After::Next("C".into()), "B stays skipped");
        o.status = Some(status);
        // Every package refused for the image: nothing left to ask for.
        let (status, _) = refuse(&o, "C", 7005);
        o.status = Some(status);
        let (status, after) = refuse(&o, "teTapaSUFq", 7005);
        assert_eq!(after, After::None);
        o.status = Some(status);
        assert_eq!(next_package(&o), None);
        // Another image: every package may be asked for again.
        o.spec.image_id = "508".into();
        assert_eq!(next_package(&o).as_deref(), Some("teTapaSUFq"));
        let (status, _) = refuse(&o, "teTapaSUFq", 7005);
        assert_eq!(
            status.skipped_packages.unwrap().package_ids,
            ["teTapaSUFq"],
            "the skips of the old image are dropped"
        );
    }
}
