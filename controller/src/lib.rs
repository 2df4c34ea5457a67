//! The controller component.
