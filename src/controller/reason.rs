//! What the controller makes of each reason: the provider refusal it stands for, what a
//! person can do about it, and the one retry table.

pub use crate::api::Reason;
use crate::provider::{ProviderError, Refusal};
use std::time::Duration;

/// How a reason is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Exponential from `first`, doubling per attempt, capped at `max`.
    Backoff { first: Duration, max: Duration },
    /// Not until the spec changes (a new generation) or a watched input changes.
    OnChange,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

impl Reason {
    /// The reason for a provider error (the reasons table of docs/design.md).
    pub fn of(error: &ProviderError) -> Reason {
        match error.refusal() {
            Refusal::StillCreating => Reason::ProviderCreating,
            Refusal::NoCapacity => Reason::InsufficientResources,
            Refusal::VerificationRequired => Reason::RealNameVerificationRequired,
            Refusal::Wallet => Reason::WalletError,
            Refusal::NoBalance => Reason::InsufficientBalance,
            Refusal::HostStarting => Reason::Starting,
            Refusal::HostStopping => Reason::Stopping,
            Refusal::HostNotRunning => Reason::HostNotRunning,
            Refusal::HostUnavailable => Reason::HostUnavailable,
            Refusal::TypeMismatch => Reason::TypeMismatch,
            Refusal::Unauthenticated => Reason::CredentialsInvalid,
            Refusal::Other => Reason::ProviderError,
            Refusal::Unknown => Reason::ProviderUnavailable,
            Refusal::UnsendableId => Reason::InvalidHostId,
        }
    }

    /// What a person can do about an object in this state, for messages and events; `None`
    /// when the operator handles it alone.
    pub fn remedy(self) -> Option<&'static str> {
        Some(match self {
            Reason::InsufficientResources => {
                "wait (the operator retries, up to every 10 minutes), or choose another spec.packageId"
            }
            Reason::RealNameVerificationRequired => {
                "the account owner completes real-name verification in the provider's console; the operator retries 1 to 10 minutes apart, or at once on a new value of annotation xuandashi.dev/retry-requested-at"
            }
            Reason::WalletError => {
                "check the account's wallet in the provider's console; the operator retries 1 to 10 minutes apart, or at once on a new value of annotation xuandashi.dev/retry-requested-at"
            }
            Reason::InsufficientBalance => {
                "top up the provider account; the operator retries 1 to 10 minutes apart, or at once on a new value of annotation xuandashi.dev/retry-requested-at"
            }
            Reason::TypeMismatch => {
                "change spec.imageId or spec.packageId so that their types are equal"
            }
            Reason::CredentialsInvalid => {
                "fix the uuid and secret keys of the credentials Secret (spec.credentialsSecretRef, else the operator's default); the operator tries again as soon as the Secret changes"
            }
            Reason::CredentialsMissing => {
                "create the credentials Secret with keys uuid and secret, or set spec.credentialsSecretRef"
            }
            Reason::CredentialsAccountChanged => {
                "restore the credentials of the recorded account (status.account): the host is there"
            }
            Reason::CreateOutcomeUnknown => {
                "find this object's host in the provider's console, then set spec.hostId to it, or, if none was rented, set the create-not-rented annotation to status.createPending.since"
            }
            Reason::HostNotFound => {
                "if the host was released on purpose, delete this object (nothing more is billed); otherwise give the provider's support the host id"
            }
            Reason::HostClaimed => {
                "set spec.hostId to a host no other RentedHost claims, or remove it to rent a new one"
            }
            Reason::Expired => {
                "the rental period ended: delete this object, and apply a new one for a new host"
            }
            Reason::ReleaseFailed => {
                "the host still bills: the operator keeps retrying; if it persists, give the provider's support the traceId"
            }
            Reason::ConnectionSecretConflict => {
                "rename spec.connectionSecretName, or delete the Secret of that name that the operator does not own"
            }
            Reason::HostNotRunning => {
                "start the host (spec.powerState: Running) before rebooting it"
            }
            Reason::Paused => "remove annotation xuandashi.dev/paused to resume",
            Reason::BudgetExceeded => {
                "raise spec.limit (or spec.maxHosts) of the namespace's RentedHostBudget, or delete it; the operator tries again as soon as a budget of the namespace changes or its window turns"
            }
            Reason::PriceUnknown => {
                "nothing if the provider's package list is back soon: a budget applies, so no host is rented at an unknown price; the operator retries 1 to 10 minutes apart"
            }
            Reason::InvalidHostId => {
                "name the host by its id exactly as the provider shows it (letters, digits, '-' and '_' only): delete this object and apply it again with the right spec.hostId"
            }
            Reason::ProviderError | Reason::ProviderUnavailable | Reason::HostUnavailable => {
                "nothing, the operator retries; if it persists, give the provider's support the traceId"
            }
            // Progress, and waits the operator ends by itself (ProviderCreating,
            // AwaitingCreateOutcome): nothing for a person to do.
            _ => return None,
        })
    }

    /// Whether this reason stops progress until a person acts (phase Failed).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Reason::TypeMismatch
                | Reason::CredentialsInvalid
                | Reason::CreateOutcomeUnknown
                | Reason::HostNotFound
                | Reason::HostClaimed
                | Reason::InvalidHostId
        )
    }

    /// Whether every create on the account would meet this refusal too (capacity, balance,
    /// wallet, verification): the children of one pool then retry as one.
    pub fn holds_siblings(self) -> bool {
        matches!(
            self,
            Reason::InsufficientResources
                | Reason::InsufficientBalance
                | Reason::WalletError
                | Reason::RealNameVerificationRequired
        )
    }

    /// Whether a retry waits out its delay even when something else triggers a reconcile
    /// first. Credential problems do not: a changed Secret must be tried at once.
    pub fn holds_retries(self) -> bool {
        !matches!(
            self,
            Reason::CredentialsInvalid | Reason::CredentialsMissing
        ) && !self.waits_for_budget()
    }

    /// Whether no create was sent for a budget of the namespace: the object tries again
    /// when a budget changes, and a pool adds no child meanwhile.
    pub fn waits_for_budget(self) -> bool {
        matches!(self, Reason::BudgetExceeded | Reason::PriceUnknown)
    }

    /// The retry table: every retry delay of the controller comes from here.
    pub fn retry(self) -> Retry {
        let backoff = |first, max| Retry::Backoff {
            first: secs(first),
            max: secs(max),
        };
        match self {
            Reason::ProviderCreating => backoff(15, 120),
            Reason::InsufficientResources => backoff(30, 600),
            Reason::RealNameVerificationRequired
            | Reason::WalletError
            | Reason::InsufficientBalance => backoff(60, 600),
            Reason::CredentialsInvalid => backoff(600, 600),
            Reason::TypeMismatch => Retry::OnChange,
            // The end of the claim that refused it wakes the object; this is a safety net.
            Reason::HostClaimed => backoff(60, 600),
            // Looked at again now and then: another object's resolution may settle it.
            Reason::CreateOutcomeUnknown | Reason::ConnectionSecretConflict => backoff(60, 600),
            // The Secret watch brings the object back at once; this is a safety net.
            Reason::CredentialsMissing | Reason::CredentialsAccountChanged => backoff(600, 600),
            Reason::ProviderUnavailable
            | Reason::AwaitingCreateOutcome
            | Reason::HostUnavailable => backoff(5, 300),
            Reason::HostNotRunning => Retry::OnChange,
            Reason::ProviderError | Reason::ReleaseFailed => backoff(10, 300),
            Reason::HostNotFound | Reason::Expired => backoff(600, 600),
            Reason::Creating
            | Reason::Provisioning
            | Reason::Running
            | Reason::Stopped
            | Reason::Stopping
            | Reason::Starting
            | Reason::Rented
            | Reason::Observed => backoff(5, 300),
            Reason::Paused | Reason::InvalidHostId => Retry::OnChange,
            // A change of a budget of the namespace (or its window's turn) wakes the
            // object; this is a safety net.
            Reason::BudgetExceeded => backoff(600, 600),
            Reason::PriceUnknown => backoff(60, 600),
        }
    }
}

impl Retry {
    /// Delay before retry number `attempt` (0 for the first), with `jitter` in [0, 1)
    /// spreading it over ±10 %; `None` means wait for a change.
    pub fn delay(self, attempt: u32, jitter: f64) -> Option<Duration> {
        match self {
            Retry::OnChange => None,
            Retry::Backoff { first, max } => {
                let base = first
                    .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
                    .min(max);
                Some(base.mul_f64(0.9 + 0.2 * jitter.clamp(0.0, 1.0)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn business(code: i64) -> ProviderError {
        ProviderError::Business {
            code,
            message: "m".into(),
            trace_id: None,
        }
    }

    #[test]
    fn the_troubleshooting_page_explains_every_reason() {
        use strum::IntoEnumIterator;
        let page = include_str!("../../docs/troubleshooting.md");
        let headings: Vec<&str> = page.lines().filter(|l| l.starts_with("### ")).collect();
        for reason in Reason::iter() {
            let named = |h: &&str| h[4..].split(", ").any(|n| n == reason.as_str());
            assert!(
                headings.iter().any(named),
                "{} has no section",
                reason.as_str()
            );
        }
    }

    #[test]
    fn every_reason_that_needs_a_person_says_what_to_do() {
        use strum::IntoEnumIterator;
        for reason in Reason::iter().filter(|r| r.is_terminal()) {
            assert!(reason.remedy().is_some(), "{}", reason.as_str());
        }
    }

    #[test]
    fn provider_codes_map_to_the_reasons_table() {
        let table = [
            (6005, Reason::ProviderCreating),
            (6002, Reason::InsufficientResources),
            (1037, Reason::RealNameVerificationRequired),
            (9000, Reason::WalletError),
            (9001, Reason::InsufficientBalance),
            (7005, Reason::TypeMismatch),
            (401, Reason::CredentialsInvalid),
            (1003, Reason::ProviderError),
            (500, Reason::ProviderError),
        ];
        for (code, reason) in table {
            assert_eq!(Reason::of(&business(code)), reason, "code {code}");
        }
        for unknown in [
            ProviderError::Transport("t".into()),
            ProviderError::HttpStatus(502),
            ProviderError::Malformed("x".into()),
        ] {
            assert_eq!(Reason::of(&unknown), Reason::ProviderUnavailable);
        }
        let stray = ProviderError::UnsendableId("ID.".into());
        assert_eq!(Reason::of(&stray), Reason::InvalidHostId);
    }

    #[test]
    fn retry_delays_follow_the_table() {
        let d = |r: Reason, n| r.retry().delay(n, 0.5);
        assert_eq!(d(Reason::ProviderCreating, 0), Some(secs(15)));
        assert_eq!(d(Reason::ProviderCreating, 1), Some(secs(30)));
        assert_eq!(d(Reason::ProviderCreating, 5), Some(secs(120)));
        assert_eq!(d(Reason::InsufficientResources, 0), Some(secs(30)));
        assert_eq!(d(Reason::InsufficientResources, 3), Some(secs(240)));
        assert_eq!(d(Reason::InsufficientResources, 30), Some(secs(600)));
        // Fixed by a person (a top-up, a verification): soon at first, then every 10 min.
        for account in [
            Reason::RealNameVerificationRequired,
            Reason::WalletError,
            Reason::InsufficientBalance,
        ] {
            assert_eq!(d(account, 0), Some(secs(60)));
            assert_eq!(d(account, 2), Some(secs(240)));
            assert_eq!(d(account, 4), Some(secs(600)));
        }
        assert_eq!(d(Reason::CredentialsInvalid, 0), Some(secs(600)));
        assert_eq!(d(Reason::Paused, 0), None, "until the annotation changes");
        assert_eq!(d(Reason::TypeMismatch, 0), None);
        assert_eq!(d(Reason::ProviderUnavailable, 0), Some(secs(5)));
        assert_eq!(d(Reason::ProviderUnavailable, 10), Some(secs(300)));
    }

    #[test]
    fn reason_labels_are_unique_and_every_one_has_a_retry_row() {
        use strum::IntoEnumIterator;
        let names: std::collections::HashSet<&str> = Reason::iter().map(Reason::as_str).collect();
        assert_eq!(names.len(), Reason::iter().count());
        for r in Reason::iter() {
            assert!(
                r.as_str().chars().all(|c| c.is_ascii_alphanumeric()),
                "{r:?}"
            );
            let _ = r.retry();
        }
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let r = Reason::InsufficientResources.retry();
        assert_eq!(r.delay(0, 0.0), Some(secs(27)));
        assert_eq!(r.delay(0, 1.0), Some(secs(33)));
    }
}
