//! The provider client's one error type. It keeps the provider's code, `msg` and `traceId`,
//! and tells a proven business error (no side effect happened) from an unknown outcome.

/// An error from a provider call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// A well-formed envelope with a non-zero code: the call was refused, nothing happened.
    #[error("provider code {code}: {explanation}{detail}", explanation = explain(*.code), detail = provider_detail(message, trace_id.as_deref()))]
    Business {
        code: i64,
        message: String,
        trace_id: Option<String>,
    },
    /// No answer: timeout, connection refused or reset. The call may have taken effect.
    #[error("no answer from the provider: {0}")]
    Transport(String),
    /// An HTTP error status without a usable envelope. The call may have taken effect.
    #[error("HTTP {0} from the provider")]
    HttpStatus(u16),
    /// An answer that is not the documented JSON. The call may have taken effect.
    #[error("unreadable answer from the provider: {0}")]
    Malformed(String),
    /// An id the provider's alphabet (letters, digits, `-`, `_`) cannot hold: the call was
    /// not sent, since any rewriting would name another host.
    #[error(
        "host id {0:?} has characters no provider id has (only letters, digits, '-' and '_'), so nothing was sent"
    )]
    UnsendableId(String),
    /// The call's budget ran out before its turn in the account's rate limit came, so it
    /// was never sent: nothing happened.
    #[error("nothing was sent: {0}")]
    Unsent(String),
    /// No token could be had, so the call was never sent: nothing happened.
    #[error("no token, so nothing was sent: {0}")]
    NotSent(Box<ProviderError>),
}

/// What an error means, in the operator's words rather than the provider's codes (a second
/// API version maps its own answers here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The provider is still creating the account's hosts (6005): retried shortly.
    StillCreating,
    /// No capacity for the package (6002).
    NoCapacity,
    /// The account owner has not completed real-name verification (1037).
    VerificationRequired,
    /// The account's wallet failed (9000).
    Wallet,
    /// The balance is too low (9001, 6003).
    NoBalance,
    /// The host is starting (6000) or stopping (6001).
    HostStarting,
    HostStopping,
    /// The host is not running, so it cannot be rebooted (7002, 7004).
    HostNotRunning,
    /// The host is unavailable for now (7003).
    HostUnavailable,
    /// The package's and the image's types differ (7005).
    TypeMismatch,
    /// The credentials are wrong (401).
    Unauthenticated,
    /// Any other refusal: nothing happened.
    Other,
    /// No usable answer: the call may have taken effect.
    Unknown,
    /// The host id cannot be sent (see [`ProviderError::UnsendableId`]).
    UnsendableId,
}

impl ProviderError {
    /// What this error means (see [`Refusal`]).
    pub fn refusal(&self) -> Refusal {
        if let ProviderError::UnsendableId(_) = self {
            return Refusal::UnsendableId;
        }
        match self.code() {
            Some(6005) => Refusal::StillCreating,
            Some(6002) => Refusal::NoCapacity,
            Some(1037) => Refusal::VerificationRequired,
            Some(9000) => Refusal::Wallet,
            Some(9001 | 6003) => Refusal::NoBalance,
            Some(6000) => Refusal::HostStarting,
            Some(6001) => Refusal::HostStopping,
            Some(7002 | 7004) => Refusal::HostNotRunning,
            Some(7003) => Refusal::HostUnavailable,
            Some(7005) => Refusal::TypeMismatch,
            Some(401) => Refusal::Unauthenticated,
            Some(_) => Refusal::Other,
            None => Refusal::Unknown,
        }
    }

    /// What happened, in English, without the provider's own message (see
    /// [`provider_detail`]).
    pub fn summary(&self) -> String {
        match (self, self.code()) {
            (ProviderError::Business { .. }, Some(code)) => {
                format!("provider code {code}: {}", explain(code))
            }
            (ProviderError::NotSent(_), Some(code)) => {
                format!(
                    "no token, so nothing was sent: getToken answered code {code}: {}",
                    explain(code)
                )
            }
            (other, _) => other.to_string(),
        }
    }

    /// True when the provider proved the call had no effect; false when it may have had one.
    pub fn is_proven_refusal(&self) -> bool {
        matches!(
            self,
            ProviderError::Business { .. }
                | ProviderError::NotSent(_)
                | ProviderError::Unsent(_)
                | ProviderError::UnsendableId(_)
        )
    }

    /// Whether this answer of `one/{id}` says the account has no such host: a well-formed
    /// refusal that is neither an authentication failure nor a "wait / retry later" code.
    /// It is one of the two signals of a host's absence (the other: a complete listing).
    pub fn denies_host(&self) -> bool {
        // Codes that mean something else (authentication, load, a missing parameter, the
        // wallet, capacity, a host that is busy) prove nothing about the host's existence.
        matches!(self, ProviderError::Business { code, .. }
        if !matches!(
            code,
            401 | 500 | 503 | 1005 | 1007 | 1037 | 6000..=6005 | 7002..=7004 | 9000 | 9001
        ))
    }

    /// The provider's code, when it gave one.
    pub fn code(&self) -> Option<i64> {
        match self {
            ProviderError::Business { code, .. } => Some(*code),
            ProviderError::NotSent(e) => e.code(),
            _ => None,
        }
    }

    /// The provider's `msg`, verbatim, when it gave one.
    pub fn provider_message(&self) -> Option<&str> {
        match self {
            ProviderError::Business { message, .. } => Some(message),
            ProviderError::NotSent(e) => e.provider_message(),
            _ => None,
        }
    }

    pub fn trace_id(&self) -> Option<&str> {
        match self {
            ProviderError::Business { trace_id, .. } => trace_id.as_deref(),
            ProviderError::NotSent(e) => e.trace_id(),
            _ => None,
        }
    }

    /// A bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Business { .. } => "business",
            ProviderError::Transport(_) => "transport",
            ProviderError::HttpStatus(_) => "http_status",
            ProviderError::Malformed(_) => "malformed",
            ProviderError::UnsendableId(_) => "unsendable_id",
            ProviderError::Unsent(_) => "unsent",
            ProviderError::NotSent(e) => e.kind(),
        }
    }
}

/// What the provider said, for a message: ` (provider: "msg", traceId T)`; empty when it
/// said nothing. The traceId is what the provider's support asks for.
pub fn provider_detail(message: &str, trace_id: Option<&str>) -> String {
    let mut parts = Vec::new();
    if !message.is_empty() {
        parts.push(format!("provider: \"{message}\""));
    }
    if let Some(trace) = trace_id.filter(|t| !t.is_empty()) {
        parts.push(format!("traceId {trace}"));
    }
    match parts.is_empty() {
        true => String::new(),
        false => format!(" ({})", parts.join(", ")),
    }
}

/// English explanation of a provider code (the provider's own messages are often Chinese).
pub fn explain(code: i64) -> &'static str {
    match code {
        0 => "ok",
        401 => {
            "authentication failed: the account id (uuid) or the app secret in the credentials Secret is wrong"
        }
        500 => "the provider reported a system error",
        503 => "the provider reported an interface error",
        1001 => "the account has no permission for this operation",
        1003 => "the provider refused the request (custom business error)",
        1005 => "the request is already being processed",
        1007 => "a required parameter is missing",
        1037 => {
            "the account has not completed real-name verification; the account owner must complete it"
        }
        6000 => "the host is starting; wait",
        6001 => "the host is stopping; wait",
        6002 => {
            "insufficient resources for this package; capacity may free up, or choose another package"
        }
        6003 => "the account balance is too low to start the host",
        6005 => "host creation is waiting at the provider; retrying shortly",
        7002 => "the host is not started, so it cannot be rebooted",
        7003 => "the host is unavailable; retry later",
        7004 => "the host is not running, so it cannot be rebooted",
        7005 => "the package type and the image type differ; change spec.packageId or spec.imageId",
        9000 => "the account wallet reported an error",
        9001 => "the account balance is too low; top up the account",
        _ => "the provider returned an undocumented error code",
    }
}
