//! The ztunnel component.
