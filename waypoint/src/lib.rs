//! The waypoint component.
