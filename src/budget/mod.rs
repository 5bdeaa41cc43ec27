//! Budgets: the spend limits of namespaces (`RentedHostBudget`). A create reserves its
//! host's prepaid total in every budget of its namespace before `createPending` is recorded
//! (`Budgets::reserve`). The reservation is settled only by what the object records, one
//! rule for every path (`book::settle`): spent once the host id is written with the
//! create's `since` (`status.rentedSince`), returned once the object records that the
//! create rented nothing (`Budgets::settle`, after each write). What a crash leaves
//! unsettled the budget controller settles by the same rule, once the create's recording
//! can no longer land (`reconcile`).

pub mod book;
mod reconcile;

pub use reconcile::{Settings, run};

use crate::api::{RentedHost, RentedHostBudget, RentedHostBudgetStatus, Reservation};
use crate::kit::Error;
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::runtime::reflector::store::Writer;
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// Field manager of budget status writes.
pub const MANAGER: &str = "rentedhost-operator-budget";

/// A create whose `createPending` write has not been sent this long after its reservation
/// (`since`) is given up, and reserves again.
pub const RECORD_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// When the sweep may settle a reservation, after its `since`: past any write of its
/// recording sent within [`RECORD_WITHIN`] (the API server ends a request within a minute)
/// on clocks that agree; [`seen_before_sweep`] covers one that does not.
pub const SWEEP_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// How long the sweep must itself have seen a reservation, on its machine's monotonic
/// clock, before it may settle it, for creates whose requests end within
/// `request_timeout`: by then the create that reserved it has sent its recording (within
/// [`RECORD_WITHIN`]) and had its answer (within its window, `request_timeout`), or will
/// never call createRent, whatever any wall clock says (one stepped forward must not
/// return a reservation whose create may still be recorded and sent). Twice the window,
/// and a minute more, as the reservation's own expiry allows.
pub fn seen_before_sweep(request_timeout: std::time::Duration) -> std::time::Duration {
    RECORD_WITHIN + request_timeout * 2 + std::time::Duration::from_secs(60)
}

/// How long a create waits for the cache of budgets to be filled before giving up.
const CACHE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Writes to one budget before giving up on conflicts (each read again first).
const ATTEMPTS: usize = 16;

/// One budget's writes: held while one is made; the budget as this process last wrote it.
type Slot = Arc<tokio::sync::Mutex<Option<RentedHostBudget>>>;

/// What a change to a budget's status comes to.
enum Change {
    /// Write this status, guarded by the resourceVersion it was computed from.
    Write(RentedHostBudgetStatus),
    /// Nothing to write, on any version of the budget (its status as it should be).
    Unchanged,
    /// Nothing to write on this version: true only if it is the current one.
    Absent,
    /// The change does not fit: true only if this is the current version.
    Refuse(String),
}

/// What a change to a budget did.
#[derive(Debug, PartialEq, Eq)]
enum Updated {
    Written,
    Unchanged,
    Refused(String),
    /// The budget is gone: it limits nothing.
    Gone,
}

/// The budgets cannot be read (their watch fails: RBAC, the CRD): nothing is created
/// meanwhile.
#[derive(Debug, thiserror::Error)]
#[error(
    "the RentedHostBudgets are not readable yet (their watch has not listed them): no create is sent until they are"
)]
pub struct Unreadable;

/// What reserving a create's prepaid total came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Reserved {
    /// Held in every budget of the namespace (none, perhaps).
    Held,
    /// A budget has no room for it: nothing is held, and why.
    Refused(String),
}

/// The budgets of every watched namespace, and the writes of their status by this process:
/// one at a time per budget, so that concurrent creates queue instead of conflicting.
pub struct Budgets {
    client: Client,
    store: Store<RentedHostBudget>,
    /// Per budget (namespace, name): the budget as this process last wrote it.
    written: Mutex<HashMap<(String, String), Slot>>,
    /// Whether the cache is known current: its watch listed, or reported a change, since it
    /// last failed. Until then (a watch that failed and came back reports nothing until a
    /// budget changes) the budgets of a namespace are read by a list of their own.
    watching: std::sync::atomic::AtomicBool,
}

impl Budgets {
    /// The budgets, and the writer of their cache: the RentedHost controller's watch of
    /// budgets fills it (and wakes the objects that wait for one).
    pub fn new(client: Client) -> (Arc<Budgets>, Writer<RentedHostBudget>) {
        let (store, writer) = kube::runtime::reflector::store();
        let budgets = Budgets {
            client,
            store,
            written: Mutex::default(),
            watching: std::sync::atomic::AtomicBool::new(true),
        };
        (Arc::new(budgets), writer)
    }

    /// What the watch that fills the cache reported: a failure makes the cache doubtful,
    /// a complete listing or a change of a budget makes it current again.
    pub fn watched<E>(&self, event: &Result<kube::runtime::watcher::Event<RentedHostBudget>, E>) {
        use kube::runtime::watcher::Event;
        let current = match event {
            Err(_) => false,
            Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_)) => true,
            // A listing under way: the cache is as doubtful as before.
            Ok(Event::Init | Event::InitApply(_)) => return,
        };
        self.watching
            .store(current, std::sync::atomic::Ordering::Relaxed);
    }

    /// The cache of budgets (for metrics).
    pub fn store(&self) -> Store<RentedHostBudget> {
        self.store.clone()
    }

    /// The budgets of `namespace`, in name order: from the cache once it is filled and
    /// current (a create must not miss one because the operator just started, or because
    /// the watch failed), else by a list of the namespace's own.
    pub async fn of_namespace(
        &self,
        namespace: &str,
    ) -> Result<Vec<Arc<RentedHostBudget>>, Unreadable> {
        let filled = tokio::time::timeout(CACHE_WAIT, self.store.wait_until_ready()).await;
        let current = self.watching.load(std::sync::atomic::Ordering::Relaxed);
        if !matches!(filled, Ok(Ok(()))) || !current {
            let api: Api<RentedHostBudget> = Api::namespaced(self.client.clone(), namespace);
            let listed = api.list(&Default::default()).await.map_err(|error| {
                tracing::warn!(%error, "the namespace's budgets cannot be listed");
                Unreadable
            })?;
            let mut budgets: Vec<_> = listed.items.into_iter().map(Arc::new).collect();
            budgets.sort_by_key(|b| b.name_any());
            return Ok(budgets);
        }
        let mut budgets: Vec<_> = self
            .store
            .state()
            .into_iter()
            .filter(|b| b.namespace().as_deref() == Some(namespace))
            .collect();
        budgets.sort_by_key(|b| b.name_any());
        Ok(budgets)
    }

    /// Reserves `reservation` in every budget of `budgets`; when one has no room, returns
    /// what the others hold and says why.
    pub async fn reserve(
        &self,
        budgets: &[Arc<RentedHostBudget>],
        reservation: &Reservation,
    ) -> Result<Reserved, Error> {
        let mut held: Vec<&RentedHostBudget> = Vec::new();
        for budget in budgets {
            let updated = self
                .update(budget, |b| {
                    match book::reserve(b, reservation.clone(), Timestamp::now()) {
                        Ok(status) if Some(&status) == b.status.as_ref() => Change::Unchanged,
                        Ok(status) => Change::Write(status),
                        Err(why) => Change::Refuse(why),
                    }
                })
                .await;
            let refused = match updated {
                Ok(Updated::Refused(why)) => Ok(Reserved::Refused(why)),
                Ok(_) => {
                    held.push(budget);
                    continue;
                }
                Err(e) => Err(e),
            };
            // Not recorded on the object: nothing was sent against what the others hold.
            let (uid, since) = (&reservation.uid, &reservation.since);
            for budget in held {
                self.settle_logged(budget, uid, since, book::Settle::Return)
                    .await;
            }
            return refused;
        }
        Ok(Reserved::Held)
    }

    /// Spends what the create `since` of `obj` holds in the budgets of its namespace,
    /// whatever the object records (a person's word that it rented nothing is no proof);
    /// whether every budget took it.
    pub async fn spend(&self, obj: &RentedHost, since: &str) -> bool {
        let Ok(budgets) = self.of_namespace(&namespace(obj)).await else {
            return false;
        };
        let uid = obj.uid().unwrap_or_default();
        let mut all = true;
        for budget in &budgets {
            let spent = self
                .settle_in(budget, &uid, since, book::Settle::Spend)
                .await;
            if let Err(error) = spent {
                tracing::warn!(budget = %budget.name_any(), %error, "spending a reservation failed");
                all = false;
            }
        }
        all
    }

    /// Settles what the create `since` of `obj` holds in the budgets of its namespace by
    /// what `obj` (as just written) records (`book::settle`): kept while it waits for that
    /// create, spent once its host is recorded with it, returned otherwise. A failure is
    /// left to the budget controller's sweep, which settles the same way.
    pub async fn settle(&self, obj: &RentedHost, since: &str) {
        let uid = obj.uid().unwrap_or_default();
        let settle = book::settle(&uid, since, Some(obj));
        if settle == book::Settle::Keep {
            return;
        }
        let Ok(budgets) = self.of_namespace(&namespace(obj)).await else {
            return;
        };
        for budget in &budgets {
            self.settle_logged(budget, &uid, since, settle).await;
        }
    }

    /// Settles what `obj`, about to go, still holds (its finalizer's last step): spent for
    /// the create that rented its host, returned for any other (no create of it is pending
    /// now). With budgets unreadable it is left to the sweep (which spends it: the object
    /// is gone).
    pub async fn settle_object(&self, obj: &RentedHost) -> Result<(), Error> {
        let Ok(budgets) = self.of_namespace(&namespace(obj)).await else {
            return Ok(());
        };
        let uid = obj.uid().unwrap_or_default();
        let api: Api<RentedHostBudget> = Api::namespaced(self.client.clone(), &namespace(obj));
        for cached in budgets {
            // Read now: a reservation the cache lacks would be left to the sweep, which
            // spends it (the object is gone).
            let read = api.get_opt(&cached.name_any()).await;
            let Some(budget) = read.map_err(Error::from_kube)? else {
                continue;
            };
            let held = budget.status.iter().flat_map(|s| &s.reservations);
            let sinces: Vec<String> = held
                .filter(|r| r.uid == uid)
                .map(|r| r.since.clone())
                .collect();
            for since in sinces {
                let settle = book::settle(&uid, &since, Some(obj));
                self.settle_in(&budget, &uid, &since, settle).await?;
            }
        }
        Ok(())
    }

    /// Brings `budget`'s status up to date (its window, its figures).
    async fn refresh(&self, budget: &RentedHostBudget, now: Timestamp) -> Result<(), Error> {
        self.update(budget, |b| {
            let status = book::current(b, now);
            match Some(&status) == b.status.as_ref() {
                true => Change::Unchanged,
                false => Change::Write(status),
            }
        })
        .await
        .map(drop)
    }

    /// Settles the reservation of create (`uid`, `since`) in `budget` as `settle` says; a
    /// failure is logged (the sweep settles it later).
    async fn settle_logged(
        &self,
        budget: &RentedHostBudget,
        uid: &str,
        since: &str,
        settle: book::Settle,
    ) {
        if let Err(error) = self.settle_in(budget, uid, since, settle).await {
            tracing::warn!(budget = %budget.name_any(), %error, ?settle, "settling a reservation failed; the sweep settles it");
        }
    }

    /// Settles the reservation of create (`uid`, `since`) in `budget` as `settle` says.
    async fn settle_in(
        &self,
        budget: &RentedHostBudget,
        uid: &str,
        since: &str,
        settle: book::Settle,
    ) -> Result<(), Error> {
        self.update(budget, |b| {
            let status = match settle {
                book::Settle::Keep => return Change::Unchanged,
                book::Settle::Spend => book::spend(b, uid, since, Timestamp::now()),
                book::Settle::Return => book::give_back(b, uid, since, Timestamp::now()),
            };
            status.map_or(Change::Absent, Change::Write)
        })
        .await
        .map(drop)
    }

    /// Applies `change` to `budget`'s status: on the version this process last wrote (or
    /// the cache's), written guarded by its resourceVersion, read again on a conflict.
    /// Nothing is refused, or found absent, but on a version just read.
    async fn update(
        &self,
        budget: &RentedHostBudget,
        change: impl Fn(&RentedHostBudget) -> Change,
    ) -> Result<Updated, Error> {
        let (ns, name) = (namespace(budget), budget.name_any());
        let slot = self
            .written
            .lock()
            .entry((ns.clone(), name.clone()))
            .or_default()
            .clone();
        let mut last = slot.lock().await;
        let api: Api<RentedHostBudget> = Api::namespaced(self.client.clone(), &ns);
        let same = |b: &RentedHostBudget| b.uid() == budget.uid();
        let mut current = last.clone().filter(same).unwrap_or_else(|| budget.clone());
        let mut fresh = false;
        for _ in 0..ATTEMPTS {
            let status = match change(&current) {
                Change::Unchanged => return Ok(Updated::Unchanged),
                Change::Absent if fresh => return Ok(Updated::Unchanged),
                Change::Refuse(why) if fresh => return Ok(Updated::Refused(why)),
                Change::Absent | Change::Refuse(_) => None,
                Change::Write(status) => Some(status),
            };
            if let Some(status) = status {
                let mut body = serde_json::to_value(&status).expect("a status always serializes");
                // A merge patch keeps what it omits: an empty list is written as one.
                body["reservations"] = serde_json::json!(status.reservations);
                let patch = serde_json::json!({
                    "metadata": {"resourceVersion": current.resource_version()},
                    "status": body,
                });
                let params = PatchParams {
                    field_manager: Some(MANAGER.into()),
                    ..Default::default()
                };
                match api
                    .patch_status(&name, &params, &Patch::Merge(&patch))
                    .await
                {
                    Ok(written) => {
                        *last = Some(written);
                        return Ok(Updated::Written);
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Updated::Gone),
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(Error::from_kube(e)),
                }
            }
            // The budget of that name now: one made again since is the one that limits.
            match api.get_opt(&name).await.map_err(Error::from_kube)? {
                Some(read) => {
                    current = read;
                    fresh = true;
                }
                None => return Ok(Updated::Gone),
            }
        }
        Err(Error::Conflict)
    }
}

fn namespace(obj: &impl ResourceExt) -> String {
    obj.namespace().unwrap_or_default()
}
