//! What this process knows of each object's connection Secret: the login details it last
//! wrote (to notice a changed password) and the Secret's resourceVersion after that write,
//! so that the watch's report of our own write is told from someone else's edit.

use crate::api::RentedHost;
use kube::runtime::reflector::ObjectRef;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};

enum Known {
    /// A write is in flight; the versions the watch reported meanwhile.
    Writing { seen: Vec<Option<String>> },
    Written {
        digest: u64,
        version: Option<String>,
    },
}

#[derive(Default)]
pub struct Connections {
    objects: Mutex<HashMap<ObjectRef<RentedHost>, Known>>,
}

pub fn digest(data: &BTreeMap<String, String>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

impl Connections {
    /// Whether the connection Secret already holds `data` (as far as this process wrote it).
    pub fn current(&self, obj: &RentedHost, data_digest: u64) -> bool {
        let objects = self.objects.lock();
        matches!(objects.get(&ObjectRef::from_obj(obj)), Some(Known::Written { digest, .. }) if *digest == data_digest)
    }

    /// A write of the object's Secret starts.
    pub fn writing(&self, obj: &RentedHost) {
        let known = Known::Writing { seen: Vec::new() };
        self.objects.lock().insert(ObjectRef::from_obj(obj), known);
    }

    /// The write ended at `version`. Had the watch meanwhile reported another version,
    /// someone else changed the Secret too: it is not known to hold `digest`, and the next
    /// observation writes it again.
    pub fn written(&self, obj: &RentedHost, digest: u64, version: Option<String>) {
        let reference = ObjectRef::from_obj(obj);
        let mut objects = self.objects.lock();
        let raced = match objects.get(&reference) {
            Some(Known::Writing { seen }) => seen.iter().any(|v| *v != version),
            _ => false,
        };
        match raced {
            true => objects.remove(&reference),
            false => objects.insert(reference, Known::Written { digest, version }),
        };
    }

    /// The write did not happen (failed, or the Secret is not ours).
    pub fn abandoned(&self, obj: &RentedHost) {
        self.objects.lock().remove(&ObjectRef::from_obj(obj));
    }

    /// The watch saw the object's connection Secret at `version` (or deleted: `None`).
    /// Unless that is our own write, it was edited or deleted and is written again: `true`
    /// says the object needs a reconcile for that.
    pub fn changed(&self, reference: &ObjectRef<RentedHost>, version: Option<&str>) -> bool {
        let mut objects = self.objects.lock();
        match objects.get_mut(reference) {
            Some(Known::Writing { seen }) => {
                seen.push(version.map(str::to_string));
                false
            }
            Some(Known::Written { version: ours, .. })
                if version.is_some() && ours.as_deref() == version =>
            {
                false
            }
            _ => {
                objects.remove(reference);
                true
            }
        }
    }

    pub fn forget(&self, reference: &ObjectRef<RentedHost>) {
        self.objects.lock().remove(reference);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj() -> RentedHost {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "xuandashi.dev/v1alpha1", "kind": "RentedHost",
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"packageId": "p", "imageId": "1", "period": {"count": 1, "unit": "Hour"}},
        }))
        .unwrap()
    }

    #[test]
    fn our_own_writes_are_not_changes_and_others_are() {
        let (c, o) = (Connections::default(), obj());
        let r = ObjectRef::from_obj(&o);
        assert!(c.changed(&r, Some("1")), "unknown: written again");
        c.writing(&o);
        assert!(
            !c.changed(&r, Some("5")),
            "the watch reports our write before it answers"
        );
        c.written(&o, 7, Some("5".into()));
        assert!(c.current(&o, 7) && !c.current(&o, 8));
        assert!(!c.changed(&r, Some("5")), "our own write");
        assert!(c.changed(&r, Some("6")), "someone's edit");
        assert!(!c.current(&o, 7));
        c.writing(&o);
        assert!(!c.changed(&r, Some("8")));
        c.written(&o, 7, Some("9".into()));
        assert!(!c.current(&o, 7), "edited during our write: written again");
        c.written(&o, 7, Some("9".into()));
        assert!(c.changed(&r, None), "deleted");
    }
}
