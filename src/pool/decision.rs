//! What a pool does next, as a pure function of the pool and its children (read by a quorum
//! list): which children to create, which to delete, and the status.

use crate::api::Reason;
use crate::api::{
    ConditionType, Conditions, DeletionPolicy, POOL_LABEL, RentedHost, RentedHostPool,
    RentedHostPoolStatus,
};
use crate::controller::decision::is_paused;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use std::collections::HashSet;

/// Children a pool lets rent at once (created, no host yet): a pool of many never sends
/// more createRent calls than this into a provider that may refuse them all.
pub const CREATING_AT_ONCE: usize = 5;

/// What to do with a pool now.
#[derive(Debug, Clone, PartialEq)]
pub struct Scale {
    /// Names of the children to create.
    pub create: Vec<String>,
    /// Children to delete, in order: name, uid and the resourceVersion the decision saw
    /// (a child changed since, rented say, is decided on again).
    pub delete: Vec<(String, String, String)>,
    pub status: RentedHostPoolStatus,
}

/// The reason a child without a host waits, if it is renting (not paused).
fn renting_reason(child: &RentedHost) -> Option<Option<Reason>> {
    if host_id(child).is_some() || is_paused(child) {
        return None;
    }
    let status = child.status.as_ref();
    Some(status.and_then(|s| s.reason(ConditionType::Ready)))
}

/// Whether a child stops the pool from adding children: the provider refused its create
/// for a reason every sibling would meet too.
fn holding_reason(child: &RentedHost) -> Option<Reason> {
    renting_reason(child)?.filter(|r| r.holds_siblings())
}

/// Whether a child takes one of the slots of children renting at once: it is renting and
/// not stopped until a person acts (7005, CreateOutcomeUnknown, …).
fn takes_a_slot(child: &RentedHost) -> bool {
    renting_reason(child).is_some_and(|r| !r.is_some_and(Reason::is_terminal))
}

fn condition(child: &RentedHost, t: ConditionType) -> Option<(String, String)> {
    child
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == t.as_str())
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn host_id(child: &RentedHost) -> Option<&str> {
    let id = child.status.as_ref()?.host_id.as_deref()?;
    (!id.trim().is_empty()).then_some(id)
}

fn pending(child: &RentedHost) -> bool {
    child
        .status
        .as_ref()
        .is_some_and(|s| s.create_pending.is_some())
}

fn is_ready(child: &RentedHost) -> bool {
    condition(child, ConditionType::Ready).is_some_and(|(s, _)| s == "True")
}

/// The index in a child's name (`<pool>-<index>`), for ordering.
fn index(pool: &str, name: &str) -> Option<u32> {
    name.strip_prefix(pool)?.strip_prefix('-')?.parse().ok()
}

/// The name of child number `i` of `pool`.
pub fn child_name(pool: &str, i: u32) -> String {
    format!("{pool}-{i}")
}

/// The next step for `pool`, whose children (those it controls, from a quorum list) are
/// `children`; `taken` are names of other objects that children cannot have.
pub fn scale(
    pool: &RentedHostPool,
    children: &[RentedHost],
    taken: &HashSet<String>,
    default: DeletionPolicy,
    now: Timestamp,
) -> Scale {
    let name = pool.name_any();
    let wanted = usize::try_from(pool.spec.replicas).unwrap_or(0);
    let live: Vec<&RentedHost> = children
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .collect();
    let mut delete = Vec::new();
    let mut create = Vec::new();
    let holding = live.iter().find_map(|c| holding_reason(c));
    if live.len() > wanted {
        // Not started first, then pending creates, then the newest rented. A child that
        // would not release its host (paused, Orphan, observe-only) is not picked: it would
        // bill beyond the replicas, without an object.
        let releases = |c: &&RentedHost| {
            !is_paused(c) && c.spec.deletion_policy_or(default) == DeletionPolicy::Delete
        };
        let mut order: Vec<&RentedHost> = live.iter().copied().filter(releases).collect();
        order.sort_by_key(|c| {
            let stage = match (host_id(c).is_some(), pending(c)) {
                (false, false) => 0,
                (false, true) => 1,
                (true, _) => 2,
            };
            let created = c.metadata.creation_timestamp.as_ref().map(|t| t.0);
            (
                stage,
                std::cmp::Reverse(created),
                std::cmp::Reverse(index(&name, &c.name_any())),
            )
        });
        delete = order
            .iter()
            .take(live.len() - wanted)
            .map(|c| {
                let version = c.resource_version().unwrap_or_default();
                (c.name_any(), c.uid().unwrap_or_default(), version)
            })
            .collect();
    } else if live.len() < wanted && holding.is_none() {
        let renting = live.iter().filter(|c| takes_a_slot(c)).count();
        let room = CREATING_AT_ONCE.saturating_sub(renting);
        let used: HashSet<String> = children
            .iter()
            .map(|c| c.name_any())
            .chain(taken.iter().cloned())
            .collect();
        create = (0..)
            .map(|i| child_name(&name, i))
            .filter(|n| !used.contains(n))
            .take((wanted - live.len()).min(room))
            .collect();
    }
    let mut kept: Vec<&RentedHost> = live
        .iter()
        .copied()
        .filter(|c| !delete.iter().any(|(n, _, _)| *n == c.name_any()))
        .collect();
    kept.sort_by_key(|c| (index(&name, &c.name_any()), c.name_any()));
    let ready = kept.iter().filter(|c| is_ready(c)).count();
    let mut status = RentedHostPoolStatus {
        observed_generation: pool.metadata.generation,
        replicas: i32::try_from(live.len()).unwrap_or(i32::MAX),
        ready_replicas: i32::try_from(ready).unwrap_or(i32::MAX),
        selector: Some(format!("{POOL_LABEL}={name}")),
        host_ids: kept
            .iter()
            .filter_map(|c| host_id(c).map(str::to_string))
            .collect(),
        conditions: pool
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default(),
    };
    let (ok, reason, message) = match holding {
        _ if ready == wanted && live.len() == wanted => (
            true,
            "AllReady",
            format!("{wanted} of {wanted} hosts ready"),
        ),
        Some(reason) if live.len() < wanted => (
            false,
            reason.as_str(),
            format!(
                "{ready} of {wanted} hosts ready; no new host is rented while the provider refuses creates ({}): the children retry as one",
                reason.as_str()
            ),
        ),
        _ => (
            false,
            "Scaling",
            format!("{ready} of {wanted} hosts ready, {} children", live.len()),
        ),
    };
    Conditions::new(&mut status.conditions, pool.metadata.generation, Time(now))
        .ready(ok, reason, &message);
    Scale {
        create,
        delete,
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{RentedHostPoolSpec, RentedHostStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn pool(replicas: i32) -> RentedHostPool {
        let mut p = RentedHostPool::new(
            "render",
            RentedHostPoolSpec {
                replicas,
                template: serde_json::from_value(serde_json::json!({"spec": {
                    "packageId": "p", "imageId": "i", "period": {"count": 1, "unit": "Day"}
                }}))
                .unwrap(),
            },
        );
        p.metadata.generation = Some(1);
        p
    }

    fn child(i: u32, host: Option<&str>, ready_reason: Option<(&str, &str)>) -> RentedHost {
        let mut c = RentedHost::new(&child_name("render", i), pool(0).spec.template.spec);
        c.metadata.uid = Some(format!("uid-{i}"));
        c.metadata.creation_timestamp = Some(Time(
            Timestamp::from_second(1_700_000_000 + i64::from(i)).unwrap(),
        ));
        let conditions = ready_reason
            .map(|(status, reason)| Condition {
                type_: "Ready".into(),
                status: status.into(),
                reason: reason.into(),
                message: String::new(),
                last_transition_time: Time(Timestamp::UNIX_EPOCH),
                observed_generation: None,
            })
            .into_iter()
            .collect();
        c.status = Some(RentedHostStatus {
            host_id: host.map(Into::into),
            conditions,
            ..Default::default()
        });
        c
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    #[test]
    fn growing_creates_a_few_at_a_time_with_free_names() {
        let s = scale(
            &pool(20),
            &[],
            &HashSet::new(),
            DeletionPolicy::Delete,
            now(),
        );
        assert_eq!(
            s.create,
            ["render-0", "render-1", "render-2", "render-3", "render-4"]
        );
        let children = [
            child(0, Some("h0"), Some(("True", "Running"))),
            child(1, None, None),
        ];
        let taken = HashSet::from(["render-2".to_string()]);
        let s = scale(&pool(20), &children, &taken, DeletionPolicy::Delete, now());
        assert_eq!(
            s.create,
            ["render-3", "render-4", "render-5", "render-6"],
            "4 more beside the one renting; render-2 belongs to someone else"
        );
        assert_eq!(s.status.replicas, 2);
        assert_eq!(s.status.ready_replicas, 1);
        assert_eq!(s.status.host_ids, ["h0"]);
        assert_eq!(
            s.status.selector.as_deref(),
            Some("xuandashi.dev/pool=render")
        );
    }

    #[test]
    fn a_refusal_every_sibling_would_meet_holds_new_children() {
        let children = [child(0, None, Some(("False", "InsufficientResources")))];
        let s = scale(
            &pool(20),
            &children,
            &HashSet::new(),
            DeletionPolicy::Delete,
            now(),
        );
        assert!(s.create.is_empty());
        let ready = &s.status.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InsufficientResources")
        );
        let transient = [child(0, None, Some(("False", "ProviderCreating")))];
        assert_eq!(
            scale(
                &pool(3),
                &transient,
                &HashSet::new(),
                DeletionPolicy::Delete,
                now()
            )
            .create
            .len(),
            2
        );
    }

    #[test]
    fn shrinking_deletes_unrented_then_pending_then_newest() {
        let mut pending_child = child(3, None, None);
        pending_child.status.as_mut().unwrap().create_pending = Some(crate::api::CreatePending {
            since: "t".into(),
            request: None,
            call_ended: None,
            deadline: None,
            asked_at: None,
        });
        let children = [
            child(0, Some("h0"), Some(("True", "Running"))),
            child(1, Some("h1"), Some(("True", "Running"))),
            child(2, Some("h2"), Some(("True", "Running"))),
            pending_child,
            child(4, None, None),
        ];
        let s = scale(
            &pool(1),
            &children,
            &HashSet::new(),
            DeletionPolicy::Delete,
            now(),
        );
        let names: Vec<&str> = s.delete.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["render-4", "render-3", "render-2", "render-1"]);
        let mut paused = children.clone();
        paused[2].metadata.annotations = Some(
            [(
                crate::api::PAUSED_ANNOTATION.to_string(),
                "true".to_string(),
            )]
            .into(),
        );
        let with_paused = scale(
            &pool(1),
            &paused,
            &HashSet::new(),
            DeletionPolicy::Delete,
            now(),
        );
        let names: Vec<&str> = with_paused
            .delete
            .iter()
            .map(|(n, _, _)| n.as_str())
            .collect();
        assert_eq!(
            names,
            ["render-4", "render-3", "render-1", "render-0"],
            "a paused child would not release its host: it stays"
        );
        assert!(s.create.is_empty());
        assert_eq!(s.status.host_ids, ["h0"]);
        let mut deleting = children.clone();
        for c in &mut deleting[1..] {
            c.metadata.deletion_timestamp = Some(Time(now()));
        }
        let s = scale(
            &pool(1),
            &deleting,
            &HashSet::new(),
            DeletionPolicy::Delete,
            now(),
        );
        assert!(
            s.delete.is_empty(),
            "children being deleted are not counted twice"
        );
        assert_eq!(s.status.replicas, 1);
        let ready = &s.status.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "AllReady")
        );
        let s = scale(
            &pool(5),
            &deleting,
            &HashSet::new(),
            DeletionPolicy::Delete,
            now(),
        );
        assert_eq!(
            s.create,
            ["render-5", "render-6", "render-7", "render-8"],
            "names of children still being deleted stay taken"
        );
    }

    #[test]
    fn only_children_renting_hold_or_take_slots() {
        let none = HashSet::new();
        let d = DeletionPolicy::Delete;
        // A rented child whose start was refused for balance (6003) holds nothing.
        let rented = [child(0, Some("h0"), Some(("False", "InsufficientBalance")))];
        assert_eq!(scale(&pool(3), &rented, &none, d, now()).create.len(), 2);
        // A paused child refused before its pause holds nothing.
        let mut paused = child(0, None, Some(("False", "InsufficientBalance")));
        paused.metadata.annotations = Some(
            [(
                crate::api::PAUSED_ANNOTATION.to_string(),
                "true".to_string(),
            )]
            .into(),
        );
        assert_eq!(scale(&pool(3), &[paused], &none, d, now()).create.len(), 2);
        // Children stopped until a person acts take no slot of the five.
        let stuck: Vec<RentedHost> = (0..5)
            .map(|i| child(i, None, Some(("False", "CreateOutcomeUnknown"))))
            .collect();
        assert_eq!(scale(&pool(7), &stuck, &none, d, now()).create.len(), 2);
    }

    #[test]
    fn children_that_would_not_release_are_never_scaled_down() {
        let none = HashSet::new();
        let mut kept = child(2, Some("h2"), Some(("True", "Running")));
        kept.spec.deletion_policy = Some(DeletionPolicy::Orphan);
        let mut observed = child(1, Some("h1"), Some(("True", "Running")));
        observed.spec.management_policy = crate::api::ManagementPolicy::ObserveOnly;
        let mut unset = child(3, Some("h3"), Some(("True", "Running")));
        unset.spec.deletion_policy = None;
        let mut zero = child(0, Some("h0"), Some(("True", "Running")));
        zero.spec.deletion_policy = Some(DeletionPolicy::Delete);
        let children = [zero, observed, kept, unset];
        let s = scale(&pool(0), &children, &none, DeletionPolicy::Delete, now());
        let names: Vec<&str> = s.delete.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["render-3", "render-0"]);
        let s = scale(&pool(0), &children, &none, DeletionPolicy::Orphan, now());
        let names: Vec<&str> = s.delete.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["render-0"], "unset follows the operator's default");
    }

    #[test]
    fn zero_is_all_ready_with_no_children() {
        let s = scale(
            &pool(0),
            &[],
            &HashSet::new(),
            DeletionPolicy::Delete,
            now(),
        );
        assert!(s.create.is_empty() && s.delete.is_empty());
        assert_eq!(s.status.conditions[0].status, "True");
    }
}
