//! State shared by every reconcile of the RentedHost controller.

use super::connections::Connections;
use super::holds::Holds;
use super::ledger::Ledger;
use super::{Config, credentials, credentials_in_use, writes};
use crate::account::Accounts;
use crate::api::RentedHost;
use crate::kit::events;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::pool::throttle::SiblingHolds;
use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};
use std::sync::Arc;

pub struct Context {
    pub client: Client,
    pub config: Config,
    /// Every provider account in reach: clients, listings, catalogues, create gates.
    pub accounts: Accounts,
    /// Host ids this process assigned or was answered, before the cache shows them.
    pub ledger: Ledger,
    /// Retry counts and the holds on creates.
    pub holds: Holds,
    /// The holds a child of a pool puts on its siblings' creates.
    pub siblings: SiblingHolds,
    pub credentials: credentials::Cache,
    /// The connection Secrets as this process wrote them.
    pub connections: Connections,
    pub reboot_records: writes::RebootRecords,
    /// The statuses this process applied lately (a lagging cache is not written again).
    pub recent: writes::RecentStatuses,
    /// The operator's credentials Secret, used by objects without `credentialsSecretRef`.
    pub default_credentials: Option<credentials::SecretRef>,
    /// Whether this replica may spend money now (it holds the lease, or runs alone).
    pub leadership: Leadership,
    pub store: Store<RentedHost>,
    /// Events, published off the reconcile's path.
    pub events: events::EventQueue,
    /// Events a step held back for the next step of its reconcile to fold into its own.
    pub held: super::journal::Held,
    pub metrics: Arc<Metrics>,
    /// The finalizer of the credentials Secrets objects still need.
    pub guard: credentials_in_use::Guard,
    /// When this process started (hosts older than that were there before it looked).
    pub started: jiff::Timestamp,
    /// Brings objects back whose wait another object's change ends (a host's claim).
    pub wake: tokio::sync::mpsc::Sender<ObjectRef<RentedHost>>,
    /// The spend limits of the namespaces, reserved in before each create.
    pub budgets: Arc<crate::budget::Budgets>,
}

impl Context {
    /// Brings back the objects whose `spec.hostId` names a host `obj` claimed, now that
    /// its claim is over (one of them may have it now).
    pub fn wake_claimants_of(&self, obj: &RentedHost) {
        for reference in self.ledger.claimants_of(obj) {
            // A full channel only delays it: the refusal is retried on its own too.
            let _ = self.wake.try_send(reference);
        }
    }

    /// Forgets what this process kept of an object that is gone.
    pub fn forget_object(&self, obj: &RentedHost) {
        self.accounts.forget(obj);
        self.connections.forget(&ObjectRef::from_obj(obj));
        self.ledger.forget_object(obj);
        self.reboot_records.forget(obj);
        self.recent.forget(obj);
        self.holds.reset(obj);
    }
}
