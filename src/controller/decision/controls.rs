//! The user's controls beside the spec: the pause annotation and the retry request.

use super::status::*;
use super::*;

pub use crate::api::is_paused;

/// The status of a paused object: as it was, but `Synced=False` with reason `Paused`.
pub fn paused(obj: &RentedHost, now: Timestamp) -> RentedHostStatus {
    let mut status = obj.status.clone().unwrap_or_default();
    let deleting = obj.metadata.deletion_timestamp.is_some();
    let msg = match deleting {
        true => {
            "paused (annotation xuandashi.dev/paused): the host is neither observed nor released; remove the annotation to let the deletion go on"
        }
        false => {
            "paused (annotation xuandashi.dev/paused): no provider call is made; remove the annotation to resume"
        }
    };
    let reason = Reason::Paused.as_str();
    conditions_of(&mut status, obj, now).synced(false, reason, msg);
    status
}

/// A retry request (annotation value) not yet acted on.
pub fn retry_requested(obj: &RentedHost) -> Option<String> {
    let handled = obj
        .status
        .as_ref()
        .and_then(|s| s.last_retry_request.as_deref());
    new_request(obj, RETRY_ANNOTATION, handled)
}

/// The value of a request annotation (each new value asks once) when it is not `handled`,
/// the last value acted on.
pub(super) fn new_request(obj: &RentedHost, key: &str, handled: Option<&str>) -> Option<String> {
    let requested = obj.metadata.annotations.as_ref()?.get(key)?.trim();
    (!requested.is_empty() && handled != Some(requested)).then(|| requested.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PAUSED_ANNOTATION;
    use crate::controller::decision::testing::*;

    fn annotated(mut o: RentedHost, key: &str, value: &str) -> RentedHost {
        o.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
        o
    }

    #[test]
    fn pause_is_the_annotation_true() {
        assert!(!is_paused(&obj(None)));
        assert!(is_paused(&annotated(obj(None), PAUSED_ANNOTATION, "true")));
        assert!(is_paused(&annotated(
            obj(None),
            PAUSED_ANNOTATION,
            " True "
        )));
        assert!(!is_paused(&annotated(
            obj(None),
            PAUSED_ANNOTATION,
            "false"
        )));
        assert!(!is_paused(&annotated(obj(None), PAUSED_ANNOTATION, "")));
    }

    #[test]
    fn a_paused_status_changes_only_synced() {
        let o = with_host("h1", Some(Phase::Running));
        let before = o.status.clone().unwrap();
        let after = paused(&o, t0());
        assert_eq!(
            cond(&after, ConditionType::Synced),
            ("False".into(), "Paused".into())
        );
        let without_conditions = |s: &RentedHostStatus| RentedHostStatus {
            conditions: vec![],
            ..s.clone()
        };
        assert_eq!(without_conditions(&before), without_conditions(&after));
        let others = |s: &RentedHostStatus| {
            s.conditions
                .iter()
                .filter(|c| c.type_ != "Synced")
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(others(&before), others(&after));
    }

    #[test]
    fn each_new_retry_value_is_acted_on_once() {
        assert_eq!(retry_requested(&obj(None)), None);
        let o = annotated(obj(None), RETRY_ANNOTATION, "2026-11-26T10:00:00Z");
        assert_eq!(retry_requested(&o).as_deref(), Some("2026-11-26T10:00:00Z"));
        let recorded = creating(&o, t0(), later(30));
        assert_eq!(
            recorded.last_retry_request.as_deref(),
            Some("2026-11-26T10:00:00Z"),
            "the create that acts on it records it"
        );
        let mut done = o.clone();
        done.status = Some(recorded);
        assert_eq!(retry_requested(&done), None);
        let again = annotated(done, RETRY_ANNOTATION, "2026-11-26T10:05:00Z");
        assert!(retry_requested(&again).is_some());
        assert_eq!(
            retry_requested(&annotated(obj(None), RETRY_ANNOTATION, " ")),
            None
        );
    }
}
