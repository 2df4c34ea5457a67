//! `meshctl tap`: live requests through every waypoint, filtered at the waypoints. Requests
//! are what waypoints see; a tap needs no more than the admin port of each, reached inside its
//! pod. The sandbox's lock is held only to find the waypoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use super::proxies::{self, Proxy};
use super::sandbox::Sandbox;
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::host::tap::{self, TapReader};
use crate::sandbox::model::stat::Resource;
use crate::sandbox::settings::SandboxSettings;

/// What to tap.
#[derive(Clone, Debug)]
pub struct TapOptions {
    /// Deployment (its workload's requests) or Service.
    pub resource: Resource,
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Only this method.
    pub method: Option<String>,
    /// Only paths starting with this.
    pub path: Option<String>,
}

impl TapOptions {
    /// The `/tap` query that selects these requests at the waypoint.
    pub fn query(&self) -> Result<String> {
        let what = match self.resource {
            Resource::Deployment => "workload",
            Resource::Service => "service",
            Resource::Namespace => {
                return Err(SandboxError::Invalid(
                    "tap deploy/NAME or svc/NAME".to_owned(),
                ));
            }
        };
        let mut query = format!(
            "{what}={}&namespace={}",
            encode(&self.name),
            encode(&self.namespace)
        );
        if let Some(method) = &self.method {
            query.push_str(&format!("&method={}", encode(method)));
        }
        if let Some(path) = &self.path {
            query.push_str(&format!("&path={}", encode(path)));
        }
        Ok(query)
    }
}

/// Percent-encodes everything but unreserved characters and `/`.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Taps every waypoint: `ready` hears how many once all listen, `line` gets each JSON line
/// (events, and `{"dropped":N}` notices) until it returns false.
pub fn run(
    cfg: &SandboxSettings,
    options: &TapOptions,
    ready: impl FnOnce(usize),
    mut line: impl FnMut(&str) -> bool,
) -> Result<()> {
    let query = options.query()?;
    let waypoints: Vec<Proxy> = proxies::waypoints(&Sandbox::open(cfg)?)
        .into_iter()
        .map(|(proxy, _, _)| proxy)
        .collect();
    if waypoints.is_empty() {
        return Err(SandboxError::Invalid(
            "no waypoint runs: requests are seen by waypoints (apply a Gateway of class \
             istio-waypoint and bind the service to it with istio.io/use-waypoint)"
                .to_owned(),
        ));
    }
    let mut readers = Vec::new();
    for waypoint in &waypoints {
        let reader = tap::open(&waypoint.netns, proxies::ADMIN_PORT, &query)
            .map_err(|e| SandboxError::Invalid(format!("{}: tap: {e}", waypoint.name)))?;
        readers.push((waypoint.clone(), reader));
    }
    ready(readers.len());
    let (lines, received) = mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    for (waypoint, reader) in readers {
        let (lines, done, query) = (lines.clone(), done.clone(), query.clone());
        std::thread::spawn(move || follow(&waypoint, reader, &query, &lines, &done));
    }
    drop(lines);
    for text in received {
        if !line(&text) {
            break;
        }
    }
    done.store(true, Ordering::Relaxed);
    Ok(())
}

/// Forwards one waypoint's lines; when it ends a stream (its connection deadline), listens
/// again, until the tap is done or the waypoint is gone.
fn follow(
    waypoint: &Proxy,
    mut reader: TapReader,
    query: &str,
    lines: &mpsc::Sender<String>,
    done: &AtomicBool,
) {
    loop {
        while let Some(text) = reader.next_line() {
            if done.load(Ordering::Relaxed) || lines.send(text).is_err() {
                return;
            }
        }
        match tap::open(&waypoint.netns, proxies::ADMIN_PORT, query) {
            Ok(again) if !done.load(Ordering::Relaxed) => reader = again,
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_name_what_is_tapped_encoded() {
        let options = TapOptions {
            resource: Resource::Deployment,
            name: "orders".into(),
            namespace: "shop".into(),
            method: Some("GET".into()),
            path: Some("/api/a b&c".into()),
        };
        assert_eq!(
            options.query().unwrap(),
            "workload=orders&namespace=shop&method=GET&path=/api/a%20b%26c"
        );
        let service = TapOptions {
            resource: Resource::Service,
            method: None,
            path: None,
            ..options.clone()
        };
        assert_eq!(service.query().unwrap(), "service=orders&namespace=shop");
        let namespace = TapOptions {
            resource: Resource::Namespace,
            ..options
        };
        assert!(namespace.query().is_err());
    }
}
