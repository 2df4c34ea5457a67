//! Request mirroring: a fire-and-forget copy to another service, with the host renamed
//! `<host>-shadow` as Envoy does. The copy never affects the client's response: it runs in its
//! own task, its answer is discarded, and when too many copies are in flight new ones are
//! skipped rather than queued.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use http::Request;

use super::body::{self, Buffered};
use super::compiled::Engine;
use super::config::DestSpec;
use super::headers::{authority, set_authority, shadow_authority};
use super::origin::Caller;
use super::trace::{ClientSpan, MirrorTrace, client_span, cluster_name, random_id};
use super::upstream::UpstreamClient;
use super::{endpoints, select};

/// How long a copy may take when the route sets no timeout.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// The body of a copy.
pub(crate) enum MirrorBody {
    /// No body.
    Empty,
    /// The request body once complete (`None`: it never will be, skip the copy).
    Wait(Pin<Box<dyn Future<Output = Option<Arc<Buffered>>> + Send>>),
}

/// One copy to send.
pub(crate) struct MirrorRequest {
    /// The engine (config and runtime state).
    pub engine: Arc<Engine>,
    /// The transport.
    pub upstream: Arc<dyn UpstreamClient>,
    /// The original caller, carried forward as for the request itself.
    pub caller: Caller,
    /// Where the copy goes.
    pub dest: DestSpec,
    /// Service port of the copy.
    pub port: u16,
    /// The request as forwarded.
    pub parts: http::request::Parts,
    /// Its body.
    pub body: MirrorBody,
    /// The route's timeout, if any.
    pub deadline: Option<Duration>,
    /// The trace of the request it copies, when its service is traced.
    pub trace: Option<MirrorTrace>,
}

/// Sends a copy in the background, unless too many are already in flight.
pub(crate) fn spawn(copy: MirrorRequest) {
    let Ok(permit) = copy.engine.runtime.mirrors.clone().try_acquire_owned() else {
        tracing::debug!(service = %copy.dest.hostname, "mirror skipped: too many in flight");
        return;
    };
    let deadline = copy.deadline.unwrap_or(DEFAULT_DEADLINE);
    tokio::spawn(async move {
        let _permit = permit;
        let hostname = copy.dest.hostname.clone();
        match tokio::time::timeout(deadline, send(copy)).await {
            Ok(Ok(status)) => tracing::debug!(service = %hostname, %status, "mirror answered"),
            Ok(Err(why)) => tracing::debug!(service = %hostname, why, "mirror not sent"),
            Err(_) => tracing::debug!(service = %hostname, "mirror timed out"),
        }
    });
}

async fn send(copy: MirrorRequest) -> Result<http::StatusCode, &'static str> {
    let MirrorRequest {
        engine,
        upstream,
        caller,
        dest,
        port,
        mut parts,
        body,
        trace,
        ..
    } = copy;
    let body = match body {
        MirrorBody::Empty => body::empty(),
        MirrorBody::Wait(done) => done.await.ok_or("request body not kept")?.body(),
    };
    let shadow = shadow_authority(authority(&parts));
    if let Ok(v) = HeaderValue::from_str(&shadow) {
        set_authority(&mut parts, &v);
    }
    let policy = engine
        .config
        .destinations
        .get(&dest.hostname)
        .map(Arc::as_ref);
    let resolved = select::resolve(&dest, policy).ok_or("unknown subset")?;
    let state = engine.runtime.upstream(&dest.hostname);
    let candidates = dest
        .endpoints
        .candidates(&upstream, &state, port, resolved.uids);
    let outlier = resolved.policy.outlier.as_ref();
    let endpoint = endpoints::choose(&state, resolved.policy.lb, &candidates, outlier, &[])
        .ok_or("no healthy endpoint")?;
    let _in_flight = endpoint.state.start();
    let mut span = trace.as_ref().map(|t| {
        let span = ClientSpan {
            span_id: random_id(),
            cluster: cluster_name(port, dest.subset.as_deref(), &dest.hostname),
            upstream: Some(endpoint.info.address),
            started: SystemTime::now(),
            ended: None,
            status: 0,
            error: None,
        };
        t.context.write(&mut parts.headers, span.span_id);
        span
    });
    let request = Request::from_parts(parts, body);
    let sent = upstream.send(&endpoint.info, &caller, request).await;
    if let (Some(t), Some(span)) = (&trace, span.as_mut()) {
        match &sent {
            Ok(r) => span.status = r.status().as_u16(),
            Err(_) => span.error = Some("upstream failed"),
        }
        record_span(&engine, t, span);
    }
    // The answer is discarded; dropping it releases the stream.
    Ok(sent.map_err(|_| "upstream failed")?.status())
}

/// Exports the span of a copy, when its trace records.
fn record_span(engine: &Engine, trace: &MirrorTrace, span: &ClientSpan) {
    let Some(provider) = &trace.provider else {
        return;
    };
    let built = client_span(
        &trace.context,
        span,
        SystemTime::now(),
        provider.max_tag_length,
        &trace.tags,
    );
    engine
        .runtime
        .metrics
        .spans
        .submit(provider, &trace.resource, built);
}
