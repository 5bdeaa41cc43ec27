//! What this process knows of host ids before the cache shows it: the hosts it assigned
//! (rented, paired or adopted) and the hosts createRent answered it. Money rests on it: a
//! host in here is never paired with another object, and an answered host is its object's
//! whatever pairing would say.

use crate::api::RentedHost;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};

pub(crate) fn object_key(obj: &RentedHost) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

pub struct Ledger {
    store: Store<RentedHost>,
    /// Host ids this process assigned, until the object as stored shows them: the object
    /// (key).
    claims: Mutex<HashMap<String, String>>,
    /// Host ids createRent answered this process, per object (uid) and pending create
    /// (`since`), until they are written: the object's host, whatever pairing would say.
    answers: Mutex<HashMap<String, (String, String)>>,
    /// Every host id an object of this process's sight ever claimed: a host let go
    /// (`Orphan`) is not someone else's.
    ever_claimed: Mutex<HashSet<String>>,
}

impl Ledger {
    pub fn new(store: Store<RentedHost>) -> Ledger {
        Ledger {
            store,
            claims: Mutex::default(),
            answers: Mutex::default(),
            ever_claimed: Mutex::default(),
        }
    }

    /// Host ids this process learned for objects other than `obj` (until they are
    /// written), with the object (`namespace/name`) each is for.
    pub fn claims_of_others(&self, obj: &RentedHost) -> Vec<(String, String)> {
        let me = object_key(obj);
        let claims = self.claims.lock();
        claims
            .iter()
            .filter(|(_, k)| **k != me)
            .map(|(id, k)| (id.clone(), k.clone()))
            .collect()
    }

    pub fn claim(&self, obj: &RentedHost, id: &str) {
        self.claims.lock().insert(id.to_string(), object_key(obj));
    }

    pub fn release_claim(&self, id: &str) {
        self.claims.lock().remove(id);
    }

    /// Records that createRent answered host `id` for the pending create `since` of `obj`.
    pub fn answered(&self, obj: &RentedHost, since: &str, id: &str) {
        self.claim(obj, id);
        self.answers.lock().insert(
            obj.uid().unwrap_or_default(),
            (since.to_string(), id.to_string()),
        );
    }

    /// The host createRent answered for the object's current pending create, if this
    /// process got that answer.
    pub fn answer_for(&self, obj: &RentedHost) -> Option<String> {
        let since = obj.status.as_ref()?.create_pending.as_ref()?.since.clone();
        let answers = self.answers.lock();
        let (asked, id) = answers.get(&obj.uid().unwrap_or_default())?;
        (*asked == since).then(|| id.clone())
    }

    /// `obj`, as stored (the cache, or a write's answer), holds its host id: its claim and
    /// its answer are in every quorum list from now on, and need no memory here.
    pub fn recorded(&self, obj: &RentedHost) {
        let Some(id) = obj.status.as_ref().and_then(|s| s.host_id.as_deref()) else {
            return;
        };
        let me = object_key(obj);
        {
            let mut claims = self.claims.lock();
            if claims.get(id).is_some_and(|k| *k == me) {
                claims.remove(id);
            }
        }
        self.answers.lock().remove(&obj.uid().unwrap_or_default());
    }

    /// Forgets every claim and answer of an object that is gone.
    pub fn forget_object(&self, obj: &RentedHost) {
        let me = object_key(obj);
        self.claims.lock().retain(|_, k| *k != me);
        self.answers.lock().remove(&obj.uid().unwrap_or_default());
    }

    /// Every host id an object holds or names (the cache), or this process learned.
    pub fn every_claim(&self) -> HashSet<String> {
        let mut ids: HashSet<String> = self.claims.lock().keys().cloned().collect();
        for obj in self.store.state() {
            let status = obj.status.as_ref().and_then(|s| s.host_id.clone());
            ids.extend(status.into_iter().chain(obj.spec.host_id.clone()));
        }
        ids
    }

    /// Runs `f` on every host id ever claimed in this process's sight
    /// ([`Ledger::every_claim`] now included).
    pub fn with_ever_claimed<R>(&self, f: impl FnOnce(&HashSet<String>) -> R) -> R {
        let mut ever = self.ever_claimed.lock();
        ever.extend(self.every_claim());
        f(&ever)
    }

    /// The objects whose `spec.hostId` names a host `obj` claimed: now that its claim is
    /// over, one of them may have it.
    pub fn claimants_of(&self, obj: &RentedHost) -> Vec<ObjectRef<RentedHost>> {
        let me = ObjectRef::from_obj(obj);
        let ids: Vec<&str> = [
            obj.status.as_ref().and_then(|s| s.host_id.as_deref()),
            obj.spec.host_id.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        self.store
            .state()
            .iter()
            .filter(|other| {
                let asks = other.spec.host_id.as_deref();
                asks.is_some_and(|id| ids.contains(&id))
            })
            .map(|other| ObjectRef::from_obj(&**other))
            .filter(|reference| *reference != me)
            .collect()
    }
}
