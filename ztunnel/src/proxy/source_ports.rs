//! Source ports for the connections a proxy opens from a client's address inside a pod.
//!
//! When the client closes first, the proxy's connection to the app is the one that closes
//! first too, so its socket, bound to the client's IP, lingers in TIME_WAIT for a minute.
//! Under connection churn tens of thousands of them share that one IP, and the kernel's own
//! port choice for the next connection walks them one by one (measured: most of a busy
//! ztunnel's CPU, in `__inet_hash_connect` and `__inet_check_established`). Ports handed out
//! in turn from the pod's ephemeral range are free in the common case at the first try: a
//! port comes round again only after the whole range has been used.

use std::fs;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU32, Ordering};

/// The kernel's default `ip_local_port_range`.
const DEFAULT_RANGE: RangeInclusive<u16> = 32768..=60999;

/// The pod's ephemeral ports (its `ip_local_port_range` less its `ip_local_reserved_ports`)
/// and whose turn is next.
#[derive(Debug)]
pub struct SourcePorts {
    range: RangeInclusive<u16>,
    reserved: Vec<RangeInclusive<u16>>,
    next: AtomicU32,
}

impl SourcePorts {
    /// The ports the calling thread's network namespace gives to connections (the kernel's
    /// defaults where its settings cannot be read). Call it inside the pod's namespace.
    pub fn of_current_namespace() -> Self {
        let read = |name: &str| fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).ok();
        let range = read("ip_local_port_range")
            .and_then(|text| parse_range(&text))
            .unwrap_or(DEFAULT_RANGE);
        let reserved = read("ip_local_reserved_ports")
            .map(|text| parse_port_list(&text))
            .unwrap_or_default();
        Self::new(range, reserved, std::process::id())
    }

    fn new(range: RangeInclusive<u16>, reserved: Vec<RangeInclusive<u16>>, start: u32) -> Self {
        Self {
            range,
            reserved,
            next: AtomicU32::new(start),
        }
    }

    /// The next port to try, skipping reserved ones; `None` if every port is reserved.
    pub fn next_port(&self) -> Option<u16> {
        let (low, high) = (u32::from(*self.range.start()), u32::from(*self.range.end()));
        let span = high - low + 1;
        (0..span).find_map(|_| {
            let turn = self.next.fetch_add(1, Ordering::Relaxed);
            // In range by construction: low + (turn % span) <= high <= u16::MAX.
            let port = (low + turn % span) as u16;
            (!self.reserved.iter().any(|r| r.contains(&port))).then_some(port)
        })
    }
}

/// `ip_local_port_range`: two numbers, low and high.
fn parse_range(text: &str) -> Option<RangeInclusive<u16>> {
    let mut numbers = text.split_whitespace().map(str::parse::<u16>);
    let (Some(Ok(low)), Some(Ok(high))) = (numbers.next(), numbers.next()) else {
        return None;
    };
    (low > 0 && low <= high).then_some(low..=high)
}

/// `ip_local_reserved_ports`: a comma-separated list of ports and `low-high` ranges.
fn parse_port_list(text: &str) -> Vec<RangeInclusive<u16>> {
    text.trim()
        .split(',')
        .filter_map(|item| {
            let item = item.trim();
            match item.split_once('-') {
                Some((low, high)) => Some(low.parse().ok()?..=high.parse().ok()?),
                None => item.parse().ok().map(|port| port..=port),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernels_formats() {
        assert_eq!(parse_range("32768\t60999\n"), Some(32768..=60999));
        assert_eq!(parse_range("1024 1024"), Some(1024..=1024));
        assert_eq!(parse_range("9 3"), None);
        assert_eq!(parse_range("oops"), None);
        assert_eq!(
            parse_port_list("8080,9000-9002\n"),
            vec![8080..=8080, 9000..=9002]
        );
        assert!(parse_port_list("\n").is_empty());
    }

    fn taken(ports: &SourcePorts, count: usize) -> Vec<Option<u16>> {
        (0..count).map(|_| ports.next_port()).collect()
    }

    #[test]
    fn hands_out_every_port_in_turn_then_wraps() {
        let ports = SourcePorts::new(100..=103, vec![], 2);
        assert_eq!(
            taken(&ports, 5),
            [102, 103, 100, 101, 102].map(Some).to_vec()
        );
    }

    #[test]
    fn skips_reserved_ports_and_gives_none_when_all_are() {
        let ports = SourcePorts::new(100..=104, vec![101..=102], 0);
        assert_eq!(taken(&ports, 4), [100, 103, 104, 100].map(Some).to_vec());
        let none_left = SourcePorts::new(100..=101, vec![100..=101], 0);
        assert_eq!(none_left.next_port(), None);
    }
}
