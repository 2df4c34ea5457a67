//! What a fuzz target is: a function and what its inputs look like.

use crate::mutate::Shape;

/// One fuzz target.
#[derive(Clone, Copy)]
pub struct Target {
    /// Its name, also its corpus folder.
    pub name: &'static str,
    /// The function under test.
    pub run: fn(&[u8]),
    /// What its inputs are, for structure-aware mutation.
    pub shape: Shape,
    /// Tokens worth inserting.
    pub dictionary: &'static [&'static [u8]],
    /// Longest input worth trying.
    pub max_len: usize,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("name", &self.name).finish()
    }
}
