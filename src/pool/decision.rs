//! What a pool does next, as a pure function of the pool and the objects its label lists (a
//! quorum list): which of them are its children, which it may adopt, which children to
//! create and which to delete, and the status.

use super::throttle::{CREATING_AT_ONCE, holding_reason, takes_a_slot};
use crate::api::{
    ConditionType, Conditions, DeletionPolicy, POOL_LABEL, RentedHost, RentedHostPool,
    RentedHostPoolStatus, is_paused,
};
use crate::kit;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::core::PartialObjectMeta;
use kube::{Resource, ResourceExt};
use std::collections::HashSet;

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

/// An object the pool's label lists.
#[derive(Debug, Clone)]
pub enum Listed {
    /// The pool controls it.
    Child(RentedHost),
    /// Nothing controls it and it may become the pool's (see [`adoptable`]).
    Orphan(RentedHost),
    /// Someone else's: children cannot have its name.
    Other(RentedHost),
}

/// The objects a pool's label lists, in their order.
pub fn sort(
    pool: &RentedHostPool,
    listed: Vec<RentedHost>,
    default: DeletionPolicy,
) -> Vec<Listed> {
    listed
        .into_iter()
        .map(|item| match () {
            _ if controlled_by(&item, pool) => Listed::Child(item),
            _ if adoptable(&item, pool, default) => Listed::Orphan(item),
            _ => Listed::Other(item),
        })
        .collect()
}

pub fn controlled_by(child: &RentedHost, pool: &RentedHostPool) -> bool {
    kit::controlled_by(child, pool.uid().as_deref())
}

/// Whether a labelled object without a controller may become the pool's child: one of its
/// names, renting its own host and releasing it when removed (adopting anything else would
/// let a scale-down drop a host, or count a host the pool cannot release).
pub fn adoptable(obj: &RentedHost, pool: &RentedHostPool, default: DeletionPolicy) -> bool {
    let named = obj
        .name_any()
        .strip_prefix(&format!("{}-", pool.name_any()))
        .is_some_and(|i| i.parse::<u32>().is_ok());
    !kit::has_controller(obj)
        && named
        && obj.metadata.deletion_timestamp.is_none()
        && obj.spec.deletion_policy_or(default) == DeletionPolicy::Delete
}

/// Children of the pool (by their owner, in the metadata cache) that its label list missed:
/// their label was removed, and they are still the pool's and still billed.
pub fn strays<'a>(
    pool: &RentedHostPool,
    cached: impl IntoIterator<Item = &'a PartialObjectMeta<RentedHost>>,
    children: &[RentedHost],
) -> Vec<String> {
    let listed: HashSet<String> = children.iter().map(|c| c.name_any()).collect();
    let (ns, uid) = (pool.namespace(), pool.uid());
    cached
        .into_iter()
        .filter(|m| m.namespace() == ns)
        .filter(|m| kit::controlled_by(*m, uid.as_deref()))
        .map(|m| m.name_any())
        .filter(|n| !listed.contains(n))
        .collect()
}

/// Child `name` of `pool`, as the pool creates it.
pub fn child(pool: &RentedHostPool, name: &str) -> RentedHost {
    let template = &pool.spec.template;
    let metadata = template.metadata.clone().unwrap_or_default();
    let mut labels = metadata.labels;
    labels.insert(POOL_LABEL.into(), pool.name_any());
    let mut spec = template.spec.clone();
    // Scaling down must release: the pool bills as many hosts as its replicas, whatever
    // the operator's default deletion policy.
    spec.deletion_policy = Some(DeletionPolicy::Delete);
    let mut obj = RentedHost::new(name, spec);
    obj.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: pool.namespace(),
        labels: Some(labels),
        annotations: (!metadata.annotations.is_empty()).then_some(metadata.annotations),
        owner_references: pool.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    };
    obj
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

/// What a child's Ready condition says.
fn ready_message(child: &RentedHost) -> Option<String> {
    let status = child.status.as_ref()?;
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some(ready.message.clone())
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
    let holder = live.iter().find(|c| holding_reason(c).is_some());
    let holding = holder.and_then(|c| holding_reason(c));
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
        Some(reason) if live.len() < wanted && reason.waits_for_budget() => (
            false,
            reason.as_str(),
            format!(
                "{ready} of {wanted} hosts ready; no new host is rented while a budget of the namespace refuses creates ({}: {})",
                reason.as_str(),
                holder.and_then(|c| ready_message(c)).unwrap_or_default()
            ),
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
    fn listed_objects_are_children_orphans_or_others_and_strays_are_found_by_owner() {
        let mut p = pool(3);
        p.metadata.uid = Some("pool-uid".into());
        p.metadata.namespace = Some("ns".into());
        let owned = |mut c: RentedHost| {
            c.metadata.namespace = Some("ns".into());
            c.metadata.owner_references = p.controller_owner_ref(&()).map(|o| vec![o]);
            c
        };
        let mine = owned(child(0, None, None));
        let orphan = child(1, None, None);
        let mut kept = child(2, None, None);
        kept.spec.deletion_policy = Some(DeletionPolicy::Orphan);
        let mut stranger = RentedHost::new("someone-else", pool(0).spec.template.spec);
        stranger.metadata.owner_references = Some(vec![Default::default()]);
        stranger.metadata.owner_references.as_mut().unwrap()[0].controller = Some(true);
        let listed = vec![mine.clone(), orphan, kept, stranger];
        let sorted: Vec<&str> = sort(&p, listed, DeletionPolicy::Delete)
            .iter()
            .map(|l| match l {
                Listed::Child(_) => "child",
                Listed::Orphan(_) => "orphan",
                Listed::Other(_) => "other",
            })
            .collect();
        assert_eq!(
            sorted,
            ["child", "orphan", "other", "other"],
            "an orphan that would not release its host is never adopted"
        );
        let unlabelled = owned(child(7, None, None));
        let meta = |c: &RentedHost| {
            use kube::core::PartialObjectMetaExt;
            c.metadata.clone().into_response_partial::<RentedHost>()
        };
        let cached = [meta(&mine), meta(&unlabelled), meta(&child(8, None, None))];
        assert_eq!(
            strays(&p, cached.iter(), std::slice::from_ref(&mine)),
            ["render-7"]
        );
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
