//! The last good translation of each object: an edit that makes an object
//! invalid is reported, and what the object translated to before stays in
//! force until it is fixed or removed.

use std::collections::BTreeMap;

use crate::model::{ObjectKey, Problem};

/// Last good translations by object, kept from one translation to the next.
#[derive(Clone, Debug)]
pub(crate) struct LastGood<T> {
    /// What the previous translation kept.
    previous: BTreeMap<ObjectKey, T>,
    /// What this translation keeps so far.
    current: BTreeMap<ObjectKey, T>,
}

impl<T> Default for LastGood<T> {
    fn default() -> Self {
        Self {
            previous: BTreeMap::new(),
            current: BTreeMap::new(),
        }
    }
}

impl<T: Clone> LastGood<T> {
    /// Starts a translation. Objects the previous one saw but this one does
    /// not (removed from the index) are then forgotten: no ghosts.
    pub fn start(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }

    /// Remembers a good translation of `key`.
    pub fn good(&mut self, key: ObjectKey, value: &T) {
        self.current.insert(key, value.clone());
    }

    /// `key` is invalid: reports `problem`, saying what happens, and returns
    /// its last good translation, if any, which stays in force. Otherwise
    /// the `what` (policy, object) is skipped. `at` ends both messages
    /// (where this applies, or nothing).
    pub fn invalid(
        &mut self,
        key: ObjectKey,
        problem: Problem,
        what: &str,
        at: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<T> {
        let skipped = format!("{what} skipped");
        self.invalid_or(key, problem, None, &skipped, at, problems)
    }

    /// Like [`LastGood::invalid`], but without a last good translation `stand_in` takes its
    /// place (and is not remembered as good), `consequence` saying what that means.
    pub fn invalid_or(
        &mut self,
        key: ObjectKey,
        mut problem: Problem,
        stand_in: Option<T>,
        consequence: &str,
        at: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<T> {
        let kept = match self.previous.remove(&key) {
            Some(value) => {
                problem
                    .message
                    .push_str(&format!("; keeping its last good version{at}"));
                self.current.insert(key, value.clone());
                Some(value)
            }
            None => {
                problem.message.push_str(&format!("; {consequence}{at}"));
                stand_in
            }
        };
        problems.push(problem);
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("HTTPRoute", "shop", name)
    }

    fn problem() -> Problem {
        Problem::new("f.yaml", "HTTPRoute", "shop", "r").message("bad")
    }

    #[test]
    fn keeps_the_last_good_version_until_the_object_goes() {
        let mut memory = LastGood::default();
        let mut problems = Vec::new();
        memory.start();
        assert_eq!(
            memory.invalid(key("r"), problem(), "object", "", &mut problems),
            None
        );
        assert_eq!(problems[0].message, "bad; object skipped");

        memory.start();
        memory.good(key("r"), &1);
        memory.start();
        assert_eq!(
            memory.invalid(key("r"), problem(), "object", " here", &mut problems),
            Some(1)
        );
        assert_eq!(
            problems[1].message,
            "bad; keeping its last good version here"
        );
        // Still invalid in the next translation: still kept.
        memory.start();
        assert_eq!(
            memory.invalid(key("r"), problem(), "object", "", &mut problems),
            Some(1)
        );
        // Absent from one translation: forgotten.
        memory.start();
        memory.start();
        assert_eq!(
            memory.invalid(key("r"), problem(), "object", "", &mut problems),
            None
        );
    }
}
