//! What the operator tells people about an object: each transition's note becomes one Event
//! on the object and one log line, at a level that says what it means. ERROR: the operator
//! cannot do its job for the object until a person acts. WARN: money is at stake (a create
//! whose outcome is unknown, a host adopted, paired, gone or expired, a release that failed).
//! INFO: the normal story (created, running, stopped, released). Notes come once per
//! transition, not once per retry, and so do these lines.

use super::decision::{Note, Severity};
use super::{Context, credentials};
use crate::api::{EventReason, Reason, RentedHost};
use kube::ResourceExt;
use kube::runtime::events::{Event, EventType};
use parking_lot::Mutex;
use std::collections::HashMap;
use tracing::Level;

/// Events a step held back for the next step of the same reconcile to fold into its own:
/// a create's `Created` and the `Running` its first look finds are one event (one request
/// to the API server instead of two), and two log lines as ever.
#[derive(Default)]
pub struct Held(Mutex<HashMap<String, HeldNote>>);

/// A note held back: the note, its action, and the object as the step wrote it.
type HeldNote = (Note, &'static str, Box<RentedHost>);

/// Logs `note` now and holds its event for the reconcile's next note (see [`Held`]); the
/// reconcile publishes it at its end if no note came ([`publish_held`]).
pub fn hold(ctx: &Context, obj: &RentedHost, note: &Note, action: &'static str) {
    log(ctx, obj, note, action);
    let uid = obj.uid().unwrap_or_default();
    let held = (note.clone(), action, Box::new(obj.clone()));
    ctx.held.0.lock().insert(uid, held);
}

/// Publishes the event a step of the reconcile of object `uid` held and no later note took.
pub async fn publish_held(ctx: &Context, uid: &str) {
    let held = ctx.held.0.lock().remove(uid);
    if let Some((note, action, obj)) = held {
        publish(ctx, &obj, &note, action).await;
    }
}

/// The log level of a note: what its severity means.
pub fn level(note: &Note) -> Level {
    match note.severity {
        Severity::Alarm => Level::ERROR,
        Severity::Warning | Severity::Money => Level::WARN,
        Severity::Info => Level::INFO,
    }
}

/// Logs `note` about `obj` and publishes it as an Event. The line carries the object's
/// fields from the reconcile span (`namespace`, `name`, `hostId`) and the note's own:
/// `reason`, the provider's `traceId` when the note reports its error, and the credentials
/// Secret when that is what a person must fix.
pub async fn tell(ctx: &Context, obj: &RentedHost, note: &Note, action: &str) {
    log(ctx, obj, note, action);
    let held = ctx.held.0.lock().remove(&obj.uid().unwrap_or_default());
    match held {
        Some((first, first_action, _)) if note.reason == Reason::Running.into() => {
            let folded = Note {
                message: format!("{}; {}", first.message, note.message),
                ..first
            };
            publish(ctx, obj, &folded, first_action).await;
        }
        Some((first, first_action, first_obj)) => {
            publish(ctx, &first_obj, &first, first_action).await;
            publish(ctx, obj, note, action).await;
        }
        None => publish(ctx, obj, note, action).await,
    }
}

/// The log line of a note.
fn log(ctx: &Context, obj: &RentedHost, note: &Note, action: &str) {
    let status = obj.status.as_ref();
    let reported = status
        .and_then(|s| s.last_error.as_ref())
        .filter(|e| EventReason::State(e.reason) == note.reason);
    let trace_id = reported.and_then(|e| e.trace_id.as_deref());
    let code = reported.and_then(|e| e.code);
    let level = level(note);
    // An ERROR is a credentials problem: name the Secret to fix.
    let secret = (level == Level::ERROR)
        .then(|| credentials::secret_ref(obj, ctx.default_credentials.as_ref()))
        .flatten()
        .map(|r| format!("{}/{}", r.namespace, r.name));
    let message = note.message.as_str();
    let reason = note.reason.as_str();
    let secret = secret.as_deref();
    // tracing wants the level as a constant: one arm per level, one line each.
    macro_rules! tell_at {
        ($level:expr) => {
            tracing::event!(
                $level,
                reason,
                traceId = trace_id,
                code,
                secret,
                action,
                "{message}"
            )
        };
    }
    match level {
        Level::ERROR => tell_at!(Level::ERROR),
        Level::WARN => tell_at!(Level::WARN),
        _ => tell_at!(Level::INFO),
    }
}

/// Queues a note as an Event on the object; kube's recorder folds repeats into a series.
async fn publish(ctx: &Context, obj: &RentedHost, note: &Note, action: &str) {
    let event = Event {
        type_: if note.is_warning() {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: note.reason.as_str().to_string(),
        note: Some(note.message.chars().take(1000).collect()),
        action: action.to_string(),
        secondary: None,
    };
    ctx.events.publish(obj, event).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Act, Reason};

    #[test]
    fn levels_say_what_a_note_means() {
        let note = |severity, reason: EventReason| Note {
            severity,
            reason,
            message: String::new(),
        };
        let (alarm, warning) = (Severity::Alarm, Severity::Warning);
        let (money, info) = (Severity::Money, Severity::Info);
        for (n, want) in [
            (note(alarm, Reason::CredentialsInvalid.into()), Level::ERROR),
            (note(alarm, Reason::CredentialsMissing.into()), Level::ERROR),
            (
                note(warning, Reason::AwaitingCreateOutcome.into()),
                Level::WARN,
            ),
            (
                note(warning, Reason::CreateOutcomeUnknown.into()),
                Level::WARN,
            ),
            (note(warning, Reason::HostNotFound.into()), Level::WARN),
            (note(warning, Reason::Expired.into()), Level::WARN),
            (note(warning, Reason::ReleaseFailed.into()), Level::WARN),
            (
                note(warning, Reason::InsufficientBalance.into()),
                Level::WARN,
            ),
            (note(money, Act::AdoptedHost.into()), Level::WARN),
            (note(money, Act::CreateNotCommitted.into()), Level::WARN),
            (note(info, Act::Created.into()), Level::INFO),
            (note(info, Reason::Running.into()), Level::INFO),
            (note(info, Act::PowerOff.into()), Level::INFO),
            (note(info, Act::Released.into()), Level::INFO),
        ] {
            assert_eq!(level(&n), want, "{}", n.reason.as_str());
        }
    }
}
