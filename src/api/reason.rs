//! Reasons, as conditions, events and `status.lastError` show them: typed in the code,
//! written as the variant's name. What each means to the controller (retries, remedies)
//! is the controller's (`controller::reason`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an object is in its state. `as_str` is a bounded label (metrics, events, conditions):
/// the variant's name.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumIter,
    strum::EnumString,
)]
pub enum Reason {
    Creating,
    ProviderCreating,
    InsufficientResources,
    RealNameVerificationRequired,
    WalletError,
    InsufficientBalance,
    TypeMismatch,
    CredentialsInvalid,
    CredentialsMissing,
    ProviderUnavailable,
    ProviderError,
    CreateOutcomeUnknown,
    AwaitingCreateOutcome,
    HostNotFound,
    HostClaimed,
    Provisioning,
    Running,
    Stopped,
    Stopping,
    Starting,
    Expired,
    ReleaseFailed,
    Rented,
    Observed,
    HostNotRunning,
    HostUnavailable,
    ConnectionSecretConflict,
    CredentialsAccountChanged,
    /// The user paused the object (annotation `xuandashi.dev/paused`).
    Paused,
    /// A host id the provider's alphabet cannot hold: never sent, never rewritten.
    InvalidHostId,
    /// No budget of the namespace (`RentedHostBudget`) has room for the host: no create
    /// is sent.
    BudgetExceeded,
    /// A budget applies and the host's price is not known (the package list is
    /// unreadable, or lacks the package): no create is sent.
    PriceUnknown,
}

impl Reason {
    /// The reason's name: a bounded label (metrics, events, conditions).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A reason this operator does not write (another version's, or a person's edit) reads as
/// `ProviderError`: a status is never unreadable for its reason.
impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Ok(name.parse().unwrap_or(Reason::ProviderError))
    }
}

/// What an event tells of that is an act, not a state (a state's event has its [`Reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumIter)]
pub enum Act {
    Created,
    AdoptedHost,
    CreateNotCommitted,
    CreateNotRented,
    PowerOn,
    PowerOff,
    Rebooting,
    RebootDropped,
    Released,
    Orphaned,
}

impl Act {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// An event's reason: a state's, or an act's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventReason {
    State(Reason),
    Act(Act),
}

impl EventReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::State(reason) => reason.as_str(),
            EventReason::Act(act) => act.as_str(),
        }
    }
}

impl From<Reason> for EventReason {
    fn from(reason: Reason) -> Self {
        EventReason::State(reason)
    }
}

impl From<Act> for EventReason {
    fn from(act: Act) -> Self {
        EventReason::Act(act)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_written_by_name_and_any_name_reads() {
        let written = serde_json::to_value(Reason::InsufficientBalance).unwrap();
        assert_eq!(written, "InsufficientBalance");
        let read: Reason = serde_json::from_value(written).unwrap();
        assert_eq!(read, Reason::InsufficientBalance);
        let stranger: Reason = serde_json::from_str("\"SomeOtherVersionsReason\"").unwrap();
        assert_eq!(stranger, Reason::ProviderError);
    }
}
