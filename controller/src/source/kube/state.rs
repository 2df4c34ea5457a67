//! What the Kubernetes source knows, updated by watch events: a pure state
//! machine, fed [`watcher::Event`]s, from which the [`Index`] is built.
//!
//! Per kind it keeps the live objects and, while a (re)list is in progress,
//! a buffer that replaces them wholesale when the list is complete, as a
//! reflector store does: a watcher restart leaves neither ghosts (objects
//! deleted while the watch was down) nor duplicates.

use std::collections::BTreeMap;

use kube::api::DynamicObject;
use kube::runtime::watcher;

use super::convert::{self, Entry};
use super::kinds::WatchedKind;
use super::observed::ObservedMap;
use crate::model::{Index, Object, Problem};

/// (namespace, name): the key of an object within its kind.
type Name = (String, String);

/// The objects of one kind.
#[derive(Debug, Default)]
struct KindState {
    live: BTreeMap<Name, Entry>,
    /// Objects listed since the last `Init`; swapped in at `InitDone`.
    buffer: Option<BTreeMap<Name, Entry>>,
    /// A complete list has been seen (or the kind is not installed).
    synced: bool,
}

/// Everything the Kubernetes source has seen, per watched kind.
#[derive(Debug)]
pub struct KubeState {
    kinds: Vec<(&'static WatchedKind, KindState)>,
    index_dirty: bool,
    observed_dirty: bool,
}

impl KubeState {
    /// An empty state over `kinds`; nothing is synced yet.
    pub fn new(kinds: impl IntoIterator<Item = &'static WatchedKind>) -> Self {
        Self {
            kinds: kinds
                .into_iter()
                .map(|k| (k, KindState::default()))
                .collect(),
            index_dirty: true,
            observed_dirty: true,
        }
    }

    fn slot(&mut self, kind: &WatchedKind) -> Option<(&'static WatchedKind, &mut KindState)> {
        self.kinds
            .iter_mut()
            .find(|(k, _)| k.kind == kind.kind)
            .map(|(k, s)| (*k, s))
    }

    /// Applies one watch event of `kind`. Returns true when the index changed.
    /// Events of kinds this state does not watch are ignored.
    pub fn apply(&mut self, kind: &WatchedKind, event: watcher::Event<DynamicObject>) -> bool {
        let Some((kind, slot)) = self.slot(kind) else {
            return false;
        };
        let mut change = Change::default();
        match event {
            watcher::Event::Init => slot.buffer = Some(BTreeMap::new()),
            watcher::Event::InitApply(obj) => {
                let name = convert::name_of(kind, &obj);
                // The last good version may be in the live set (relist) or
                // already in the buffer.
                let buffer = slot.buffer.get_or_insert_with(BTreeMap::new);
                let previous = buffer.get(&name).or_else(|| slot.live.get(&name));
                let entry = convert::convert(kind, &obj, previous);
                buffer.insert(name, entry);
            }
            watcher::Event::InitDone => {
                let listed = slot.buffer.take().unwrap_or_default();
                change.note(&slot.live, &listed);
                slot.live = listed;
                if !slot.synced {
                    slot.synced = true;
                    change.index = true;
                }
            }
            watcher::Event::Apply(obj) => {
                let name = convert::name_of(kind, &obj);
                let entry = convert::convert(kind, &obj, slot.live.get(&name));
                if let Some(buffer) = slot.buffer.as_mut() {
                    buffer.insert(name.clone(), entry.clone());
                }
                change.entry(slot.live.get(&name), Some(&entry));
                slot.live.insert(name, entry);
            }
            watcher::Event::Delete(obj) => {
                let name = convert::name_of(kind, &obj);
                if let Some(buffer) = slot.buffer.as_mut() {
                    buffer.remove(&name);
                }
                let old = slot.live.remove(&name);
                change.entry(old.as_ref(), None);
            }
        }
        self.index_dirty |= change.index;
        self.observed_dirty |= change.observed;
        change.index
    }

    /// `kind` is not installed (its list answered 404): it has no objects,
    /// and counts as synced. Returns true when the index changed.
    pub fn mark_missing(&mut self, kind: &WatchedKind) -> bool {
        let Some((_, slot)) = self.slot(kind) else {
            return false;
        };
        let mut change = Change::default();
        change.note(&slot.live, &BTreeMap::new());
        slot.live.clear();
        slot.buffer = None;
        if !slot.synced {
            slot.synced = true;
            change.index = true;
        }
        self.index_dirty |= change.index;
        self.observed_dirty |= change.observed;
        change.index
    }

    /// True once every kind has been listed completely (or found missing):
    /// before that, an index would lack objects (policies!) that exist.
    pub fn synced(&self) -> bool {
        self.kinds.iter().all(|(_, s)| s.synced)
    }

    /// Kinds not yet listed completely.
    pub fn pending(&self) -> Vec<&'static str> {
        self.kinds
            .iter()
            .filter(|(_, s)| !s.synced)
            .map(|(k, _)| k.kind)
            .collect()
    }

    /// True (once) when the index changed since the last call.
    pub fn take_index_changed(&mut self) -> bool {
        std::mem::take(&mut self.index_dirty)
    }

    /// True (once) when the observed statuses changed since the last call.
    pub fn take_observed_changed(&mut self) -> bool {
        std::mem::take(&mut self.observed_dirty)
    }

    /// The index of the live objects: one origin per object
    /// (`kubernetes:<Kind>/<ns>/<name>`), in kind order then by name.
    pub fn index(&self) -> Index {
        let mut origins: Vec<(String, Vec<Object>, Vec<Problem>)> = Vec::new();
        for (kind, slot) in &self.kinds {
            for ((namespace, name), entry) in &slot.live {
                origins.push((
                    convert::origin(kind.kind, namespace, name),
                    entry.objects.clone(),
                    entry.problems.clone(),
                ));
            }
        }
        Index::from_origins(origins)
    }

    /// What the status and Event writers need of every live object.
    pub fn observed(&self) -> ObservedMap {
        let mut out = ObservedMap::new();
        for (kind, slot) in &self.kinds {
            for ((namespace, name), entry) in &slot.live {
                if let Some(o) = &entry.observed {
                    out.insert(convert::key(kind, namespace, name), o.clone());
                }
            }
        }
        out
    }
}

/// What a step changed.
#[derive(Default)]
struct Change {
    index: bool,
    observed: bool,
}

impl Change {
    fn entry(&mut self, old: Option<&Entry>, new: Option<&Entry>) {
        fn content(e: Option<&Entry>) -> Option<(&Vec<Object>, &Vec<Problem>)> {
            e.map(|e| (&e.objects, &e.problems))
        }
        self.index |= content(old) != content(new);
        self.observed |=
            old.and_then(|e| e.observed.as_ref()) != new.and_then(|e| e.observed.as_ref());
    }

    fn note(&mut self, old: &BTreeMap<Name, Entry>, new: &BTreeMap<Name, Entry>) {
        if old.len() != new.len() || old.keys().ne(new.keys()) {
            self.index = true;
            self.observed = true;
            return;
        }
        for (o, n) in old.values().zip(new.values()) {
            self.entry(Some(o), Some(n));
        }
    }
}
