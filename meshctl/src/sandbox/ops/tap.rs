//! `meshctl tap`: live requests through every waypoint and live connections through every
//! ztunnel, filtered at the proxies and merged in arrival order. A tap needs no more than the
//! admin port of each proxy, reached inside its network namespace. The sandbox's lock is held
//! only to find the proxies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use super::proxies::{self, Proxy};
use super::sandbox::Sandbox;
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::host::admin::percent_encode;
use crate::sandbox::host::tap::{self, TapReader};
use crate::sandbox::model::stat::Resource;
use crate::sandbox::model::tap::{TapKind, default_kind};
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
    /// Requests, connections or both; `None`: what [`default_kind`] says of the target.
    pub kind: Option<TapKind>,
    /// Ctrl-C ends the tap as the end of its streams would (the caller then finishes).
    pub until_interrupted: bool,
    /// When set, `line` also hears an empty line after each such quiet period, so a live
    /// display can catch up with what it held back.
    pub idle_tick: Option<Duration>,
}

/// What a tap reads, once all its streams listen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tapped {
    /// The kind of events.
    pub kind: TapKind,
    /// Waypoints read.
    pub waypoints: usize,
    /// ztunnels read.
    pub ztunnels: usize,
}

impl TapOptions {
    /// The `/tap` query that selects these requests at the waypoints.
    pub fn query(&self) -> Result<String> {
        let what = self.target_key()?;
        let mut query = format!(
            "kind=request&{what}={}&namespace={}",
            percent_encode(&self.name),
            percent_encode(&self.namespace)
        );
        if let Some(method) = &self.method {
            query.push_str(&format!("&method={}", percent_encode(method)));
        }
        if let Some(path) = &self.path {
            query.push_str(&format!("&path={}", percent_encode(path)));
        }
        Ok(query)
    }

    /// The `/tap` query that selects these connections at the ztunnels: a Deployment's
    /// inbound and outbound, a Service's inbound.
    pub fn connection_query(&self) -> Result<String> {
        let what = self.target_key()?;
        if self.method.is_some() || self.path.is_some() {
            return Err(SandboxError::Invalid(
                "--method and --path select requests; connections have neither (use --kind \
                 request)"
                    .to_owned(),
            ));
        }
        let side = match self.resource {
            Resource::Deployment => "&side=either",
            _ => "",
        };
        Ok(format!(
            "kind=connection&{what}={}&namespace={}{side}",
            percent_encode(&self.name),
            percent_encode(&self.namespace)
        ))
    }

    fn target_key(&self) -> Result<&'static str> {
        match self.resource {
            Resource::Deployment => Ok("workload"),
            Resource::Service => Ok("service"),
            Resource::Namespace => Err(SandboxError::Invalid(
                "tap deploy/NAME or svc/NAME".to_owned(),
            )),
        }
    }
}

/// The proxies a tap of `kind` reads, each with its query.
fn sources(sb: &Sandbox, options: &TapOptions, kind: TapKind) -> Result<Vec<(Proxy, String)>> {
    let mut sources = Vec::new();
    if kind.requests() {
        let query = options.query()?;
        let waypoints = proxies::waypoints(sb);
        if waypoints.is_empty() && kind == TapKind::Request {
            return Err(SandboxError::Invalid(
                "no waypoint runs: requests are seen by waypoints (apply a Gateway of class \
                 istio-waypoint and bind the service to it with istio.io/use-waypoint), \
                 connections by ztunnels (--kind connection)"
                    .to_owned(),
            ));
        }
        sources.extend(waypoints.into_iter().map(|(p, _, _)| (p, query.clone())));
    }
    if kind.connections() {
        let query = options.connection_query()?;
        for node in &sb.cluster.nodes {
            sources.push((proxies::ztunnel(sb, &node.name)?, query.clone()));
        }
    }
    Ok(sources)
}

/// Taps every waypoint and/or ztunnel: `ready` hears what once all listen, `line` gets each
/// JSON line (events, and `{"dropped":N}` notices) until it returns false, or until Ctrl-C
/// when [`TapOptions::until_interrupted`].
pub fn run(
    cfg: &SandboxSettings,
    options: &TapOptions,
    ready: impl FnOnce(Tapped),
    mut line: impl FnMut(&str) -> bool,
) -> Result<()> {
    let (kind, sources) = {
        let sb = Sandbox::open(cfg)?;
        let kind = options.kind.unwrap_or_else(|| {
            default_kind(
                &sb.cluster,
                options.resource,
                &options.name,
                &options.namespace,
            )
        });
        (kind, sources(&sb, options, kind)?)
    };
    let (lines, received) = mpsc::channel::<Option<String>>();
    if options.until_interrupted {
        // Before any thread starts, so every thread leaves SIGINT to the waiting one.
        let interrupted = lines.clone();
        tap::on_interrupt(move || {
            let _ = interrupted.send(None);
        })
        .map_err(|e| SandboxError::Invalid(format!("waiting for Ctrl-C: {e}")))?;
    }
    let mut readers = Vec::new();
    for (proxy, query) in sources {
        let reader = tap::open(&proxy.netns, proxies::ADMIN_PORT, &query)
            .map_err(|e| SandboxError::Invalid(format!("{}: tap: {e}", proxy.name)))?;
        readers.push((proxy, query, reader));
    }
    let count = |prefix: &str| {
        readers
            .iter()
            .filter(|(p, _, _)| p.name.starts_with(prefix))
            .count()
    };
    ready(Tapped {
        kind,
        waypoints: count("waypoint"),
        ztunnels: count("ztunnel"),
    });
    let done = Arc::new(AtomicBool::new(false));
    for (proxy, query, reader) in readers {
        let (lines, done) = (lines.clone(), done.clone());
        std::thread::spawn(move || follow(&proxy, reader, &query, &lines, &done));
    }
    drop(lines);
    loop {
        let next = match options.idle_tick {
            Some(tick) => match received.recv_timeout(tick) {
                Err(mpsc::RecvTimeoutError::Timeout) => Ok(Some(String::new())),
                other => other.map_err(|_| ()),
            },
            None => received.recv().map_err(|_| ()),
        };
        match next {
            Ok(Some(text)) if line(&text) => {}
            _ => break,
        }
    }
    done.store(true, Ordering::Relaxed);
    Ok(())
}

/// Forwards one proxy's lines; when it ends a stream (its connection deadline), listens
/// again, until the tap is done or the proxy is gone.
fn follow(
    proxy: &Proxy,
    mut reader: TapReader,
    query: &str,
    lines: &mpsc::Sender<Option<String>>,
    done: &AtomicBool,
) {
    loop {
        while let Some(text) = reader.next_line() {
            if done.load(Ordering::Relaxed) || lines.send(Some(text)).is_err() {
                return;
            }
        }
        match tap::open(&proxy.netns, proxies::ADMIN_PORT, query) {
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
            kind: None,
            until_interrupted: false,
            idle_tick: None,
        };
        assert_eq!(
            options.query().unwrap(),
            "kind=request&workload=orders&namespace=shop&method=GET&path=/api/a%20b%26c"
        );
        assert!(
            options.connection_query().is_err(),
            "connections have no method"
        );
        let service = TapOptions {
            resource: Resource::Service,
            method: None,
            path: None,
            ..options.clone()
        };
        assert_eq!(
            service.query().unwrap(),
            "kind=request&service=orders&namespace=shop"
        );
        assert_eq!(
            service.connection_query().unwrap(),
            "kind=connection&service=orders&namespace=shop"
        );
        let deployment = TapOptions {
            resource: Resource::Deployment,
            ..service.clone()
        };
        assert_eq!(
            deployment.connection_query().unwrap(),
            "kind=connection&workload=orders&namespace=shop&side=either"
        );
        let namespace = TapOptions {
            resource: Resource::Namespace,
            ..options
        };
        assert!(namespace.query().is_err());
    }
}
