//! Errors of a reconcile that the reconciler could not turn into status, either
//! controller's, and how soon the routine ones are retried.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the object changed while it was being written; it is reconciled again")]
    Conflict,
    #[error("Kubernetes API error: {}", kube_message(.0))]
    Kube(#[source] Box<kube::Error>),
    /// Leadership lapsed: protocol writes and releases wait for the next leader.
    #[error("this replica no longer leads; the leader carries on")]
    NotLeading,
    /// A budget could not take what a step must settle in it first: the step waits.
    #[error("a RentedHostBudget of the namespace could not be written; retrying")]
    BudgetUnsettled,
}

/// A Kubernetes error for people: the API server's own message, without kube's Debug dump of
/// the Status.
fn kube_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => {
            format!("{} ({} {})", status.message, status.code, status.reason)
        }
        other => other.to_string(),
    }
}

impl Error {
    pub fn from_kube(e: kube::Error) -> Error {
        match &e {
            kube::Error::Api(status) if status.code == 409 => Error::Conflict,
            _ => Error::Kube(Box::new(e)),
        }
    }

    /// How soon a reconcile that ended so is tried again when that is routine (a write raced
    /// another; another replica leads). `None` for a Kubernetes error, which each
    /// controller backs off from in its own way.
    pub fn routine_retry(&self) -> Option<Duration> {
        match self {
            Error::Conflict => Some(Duration::from_millis(200)),
            Error::NotLeading => Some(Duration::from_secs(5)),
            Error::Kube(_) | Error::BudgetUnsettled => None,
        }
    }

    /// Bounded label for metrics and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Conflict => "Conflict",
            Error::Kube(_) => "KubernetesApiError",
            Error::BudgetUnsettled => "BudgetUnsettled",
            Error::NotLeading => "NotLeading",
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::from_kube(e)
    }
}
