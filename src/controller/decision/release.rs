//! Deletion: what happens to the host, and when the finalizer may go.

use super::status::*;
use super::*;

/// What releasing the host on deletion came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Nothing to release (Orphan, or no host): the finalizer can go.
    NotNeeded,
    /// The provider deleted the host, or it is gone from the account.
    Released,
    /// The host is still there.
    Failed(Option<ProviderError>),
    /// The host is not in `account`, but the object never recorded an account (an older
    /// operator rented it): the host may bill on another account, so its absence here
    /// proves nothing.
    Unproven { account: String },
}

/// What deletion does with the host of an object, given its policy (`default` when the
/// object names none). An observe-only object never releases.
pub fn release_needed(obj: &RentedHost, default: DeletionPolicy) -> Option<String> {
    let keep = obj.spec.deletion_policy_or(default) == DeletionPolicy::Orphan;
    let id = obj.status.as_ref().and_then(|s| nonempty(&s.host_id));
    id.filter(|_| !keep)
}

/// The deletion step's outcome: `None` status means remove the finalizer.
pub fn after_release(
    obj: &RentedHost,
    release: &Release,
    now: Timestamp,
) -> (Option<Transition>, Option<Note>) {
    let id = obj
        .status
        .as_ref()
        .and_then(|s| nonempty(&s.host_id))
        .unwrap_or_default();
    match release {
        Release::NotNeeded => {
            let why = match obj.spec.observe_only() {
                true => "managementPolicy ObserveOnly",
                false => "deletionPolicy Orphan",
            };
            let note = (!id.is_empty()).then(|| {
                let message = format!("host {id} kept on the provider ({why})");
                Note::new(Severity::Money, Act::Orphaned, message)
            });
            (None, note)
        }
        Release::Released => (
            None,
            Some(Note::new(
                Severity::Info,
                Act::Released,
                format!("host {id} released"),
            )),
        ),
        Release::Unproven { account } => {
            let e = local_error(
                Reason::HostNotFound,
                format!(
                    "host {id} is not in provider account {account}, and this object never recorded the account that rented it (an older operator did): the host may still bill there, so it is not taken as released. Point the credentials at the account that rented it to release it, or set spec.deletionPolicy: Orphan to let the object go"
                ),
            );
            not_released(obj, e, now)
        }
        Release::Failed(error) => {
            let e = match error {
                Some(err) => LastError {
                    reason: Reason::ReleaseFailed,
                    message: format!("releasing host {id} failed: {err}"),
                    ..last_error(Reason::ReleaseFailed, err)
                },
                None => local_error(
                    Reason::ReleaseFailed,
                    format!("the provider did not delete host {id}"),
                ),
            };
            not_released(obj, e, now)
        }
    }
}

/// The host is not released (yet): the finalizer stays, the error is shown and retried.
fn not_released(
    obj: &RentedHost,
    e: LastError,
    now: Timestamp,
) -> (Option<Transition>, Option<Note>) {
    let mut status = base(obj);
    let reason = e.reason;
    let msg = error_message(&e);
    let note = error_note(&obj.status.clone().unwrap_or_default(), &e);
    status.last_error = Some(e);
    status.phase = Some(Phase::Deleting);
    let r = reason.as_str();
    conditions_of(&mut status, obj, now).synced(false, r, &msg);
    conditions_of(&mut status, obj, now).ready(false, r, &msg);
    (
        Some(Transition {
            status,
            note: None,
            requeue: Requeue::Retry(reason),
        }),
        note,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::decision::testing::*;

    #[test]
    fn release_follows_the_deletion_policy() {
        use crate::api::ManagementPolicy;
        let (delete, orphan) = (DeletionPolicy::Delete, DeletionPolicy::Orphan);
        let mut o = with_host("h1", None);
        assert_eq!(release_needed(&o, delete), Some("h1".into()));
        assert_eq!(release_needed(&o, orphan), None, "the operator's default");
        let (t, note) = after_release(&o, &Release::Released, t0());
        assert!(t.is_none());
        assert_eq!(note.unwrap().reason.as_str(), "Released");
        let (t, note) = after_release(
            &o,
            &Release::Failed(Some(ProviderError::HttpStatus(502))),
            t0(),
        );
        let t = t.expect("the finalizer stays");
        assert_eq!(cond(&t.status, ConditionType::Synced).1, "ReleaseFailed");
        assert_eq!(t.requeue, Requeue::Retry(Reason::ReleaseFailed));
        assert!(note.unwrap().is_warning());
        o.spec.deletion_policy = Some(delete);
        assert_eq!(
            release_needed(&o, orphan),
            Some("h1".into()),
            "the object's own"
        );
        o.spec.management_policy = ManagementPolicy::ObserveOnly;
        assert_eq!(
            release_needed(&o, delete),
            None,
            "observe-only never releases"
        );
        let (_, note) = after_release(&o, &Release::NotNeeded, t0());
        assert!(note.unwrap().message.contains("ObserveOnly"));
        o.spec.management_policy = ManagementPolicy::Full;
        o.spec.deletion_policy = Some(orphan);
        assert_eq!(release_needed(&o, delete), None);
        let (t, note) = after_release(&o, &Release::NotNeeded, t0());
        assert!(t.is_none());
        assert_eq!(note.unwrap().reason.as_str(), "Orphaned");
        assert_eq!(release_needed(&obj(None), delete), None);
        let unproven = Release::Unproven {
            account: "acct-2".into(),
        };
        let (t, note) = after_release(&with_host("h1", None), &unproven, t0());
        let t = t.expect("an absence in an account never seen proves nothing");
        assert_eq!(cond(&t.status, ConditionType::Synced).1, "HostNotFound");
        assert!(note.unwrap().message.contains("acct-2"));
    }
}
