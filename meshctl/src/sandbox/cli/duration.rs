//! Durations as the verbs' flags take them (`--window`, `--new-root-ttl`, ...): the
//! controller's parser, so both binaries read `15s` alike.

pub use controller::duration::parse_duration;
