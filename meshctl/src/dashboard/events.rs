//! Server-sent events: every refresh of the sampler as a `snapshot` event, and a tap as a
//! stream of its JSON lines (`ready` once every proxy listens, `failure` when it cannot
//! start). A stream ends when the browser goes away.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use serde_json::json;
use tokio::sync::mpsc;

use super::api;
use super::sampler::Shared;
use super::source::TAP_IN_KUBERNETES;
use crate::operator::stat::Resource;
use crate::sandbox::model::tap::TapKind;
use crate::sandbox::ops::tap::{self, TapOptions, Tapped};

/// How many events may wait for a slow browser before the producer waits too.
const BACKLOG: usize = 256;
/// How often a tap with nothing to say checks that its browser is still there.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// A response body of events, as they are produced.
pub struct EventStream {
    events: mpsc::Receiver<Bytes>,
}

impl Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.events
            .poll_recv(cx)
            .map(|event| event.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// One event in the wire format: a name (none for plain data) and one line of data.
fn event(name: Option<&str>, data: &str) -> Bytes {
    let data = data.replace('\n', " ");
    match name {
        Some(name) => Bytes::from(format!("event: {name}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

/// The current snapshot now, then each new one as the sampler makes it.
pub fn refreshes(shared: Arc<Shared>) -> EventStream {
    let (sender, events) = mpsc::channel(BACKLOG);
    tokio::spawn(async move {
        let mut refreshed = shared.subscribe();
        loop {
            let page = api::snapshot(&shared.snapshot()).to_string();
            if sender.send(event(Some("snapshot"), &page)).await.is_err()
                || refreshed.changed().await.is_err()
            {
                return;
            }
        }
    });
    EventStream { events }
}

/// The tap `params` ask for (`resource` deploy or svc, `namespace`, `name`, optional
/// `method`, `path` and `kind`), as `meshctl tap` reads it.
pub fn tap_options(params: &BTreeMap<String, String>) -> Result<TapOptions, String> {
    let given = |key: &str| params.get(key).filter(|v| !v.is_empty()).cloned();
    let needed = |key: &str| given(key).ok_or_else(|| format!("the tap needs {key}="));
    let resource = match needed("resource")?.as_str() {
        "deploy" => Resource::Deployment,
        "svc" => Resource::Service,
        other => return Err(format!("resource={other}: use deploy or svc")),
    };
    Ok(TapOptions {
        resource,
        name: needed("name")?,
        namespace: needed("namespace")?,
        method: given("method"),
        path: given("path"),
        kind: given("kind").map(|k| TapKind::parse(&k)).transpose()?,
        until_interrupted: false,
        idle_tick: Some(IDLE_TICK),
    })
}

/// A tap's lines, read by a thread of its own until the browser goes away.
pub fn tap(shared: &Shared, options: TapOptions) -> EventStream {
    let (sender, events) = mpsc::channel(BACKLOG);
    let Some(cfg) = shared.source.sandbox().cloned() else {
        let text = json!(TAP_IN_KUBERNETES).to_string();
        let _ = sender.try_send(event(Some("failure"), &text));
        return EventStream { events };
    };
    std::thread::spawn(move || {
        let ready = |tapped: Tapped| {
            let text = json!({"kind": format!("{:?}", tapped.kind).to_lowercase(),
                              "waypoints": tapped.waypoints, "ztunnels": tapped.ztunnels});
            let _ = sender.blocking_send(event(Some("ready"), &text.to_string()));
        };
        let outcome = tap::run(&cfg, &options, ready, |line| {
            if line.is_empty() {
                return !sender.is_closed();
            }
            sender.blocking_send(event(None, line)).is_ok()
        });
        if let Err(e) = outcome {
            let text = json!(e.to_string()).to_string();
            let _ = sender.blocking_send(event(Some("failure"), &text));
        }
    });
    EventStream { events }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_one_line_each_and_taps_read_their_parameters() {
        assert_eq!(event(Some("ready"), "{}"), "event: ready\ndata: {}\n\n");
        assert_eq!(event(None, "a\nb"), "data: a b\n\n");
        let params: BTreeMap<String, String> = [
            ("resource", "deploy"),
            ("namespace", "shop"),
            ("name", "orders-v1"),
            ("method", ""),
            ("path", "/api"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let options = tap_options(&params).unwrap();
        assert_eq!(options.resource, Resource::Deployment);
        assert_eq!(
            (options.method, options.path),
            (None, Some("/api".to_owned()))
        );
        let mut bad = params.clone();
        bad.insert("resource".into(), "ns".into());
        assert!(tap_options(&bad).unwrap_err().contains("deploy or svc"));
        bad.remove("resource");
        assert!(tap_options(&bad).unwrap_err().contains("resource="));
    }
}
