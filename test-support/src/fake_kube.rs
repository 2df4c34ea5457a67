//! A fake Kubernetes API server on a loopback port (plain HTTP): it answers every request
//! through a function the test gives, records what it received, and writes a kubeconfig that
//! points at it. It runs on a thread of its own, so synchronous tests (which run a binary
//! against it) and asynchronous ones use it alike; it stops when dropped.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Request {
    /// `GET`, `POST`, `PATCH`...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query, without `?`; empty when there is none.
    pub query: String,
    /// The `content-type` header; empty when absent.
    pub content_type: String,
    /// The body as JSON; `Null` when empty or not JSON.
    pub body: Value,
}

/// What the fake answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A status with a JSON body.
    Json(u16, Value),
    /// A status with a plain text body.
    Text(u16, String),
    /// A response that stays open with nothing to say (a watch with no events).
    Pending,
    /// A watch: `200` and each event as it comes, a JSON object per line, until the events'
    /// sender is dropped.
    Events(Events),
}

/// The events of one watch response, taken by the first response that streams them.
#[derive(Clone, Debug)]
pub struct Events(Arc<Mutex<Option<mpsc::UnboundedReceiver<Value>>>>);

impl Events {
    /// A watch response fed through the returned sender.
    pub fn channel() -> (mpsc::UnboundedSender<Value>, Self) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, Self(Arc::new(Mutex::new(Some(rx)))))
    }

    /// The events' receiver, for the first caller.
    pub fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Value>> {
        self.0.lock().expect("not poisoned").take()
    }
}

/// `404 NotFound` as the API server says it: a resource, or a whole kind, that does not exist.
pub fn not_found() -> Reply {
    Reply::Json(
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "message": "the server could not find the requested resource",
               "reason": "NotFound", "code": 404}),
    )
}

/// `403 Forbidden` as the API server says it when RBAC does not allow `verb` on `resource`
/// (`events.events.k8s.io`) in `namespace`.
pub fn forbidden(verb: &str, resource: &str, namespace: &str) -> Reply {
    let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
    let message = format!(
        "{resource} is forbidden: User \"system:serviceaccount:istio-system:controller\" cannot \
         {verb} resource \"{plural}\" in API group \"{group}\" in the namespace \"{namespace}\""
    );
    Reply::Json(
        403,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "message": message, "reason": "Forbidden", "code": 403}),
    )
}

/// A list of `kind` holding `items`, as the API server returns it.
pub fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": format!("{kind}List"), "apiVersion": "v1",
           "metadata": {"resourceVersion": "10"}, "items": items})
}

/// Fixed answers to `GET` by path: each path's object, or its list (then a watch of the path
/// stays open with nothing to say), or answers given in turn.
#[derive(Clone, Debug, Default)]
pub struct Routes(BTreeMap<String, InTurn>);

/// The answers of one path, in turn, the last repeated; and how many were given.
#[derive(Clone, Debug)]
struct InTurn {
    replies: Vec<Reply>,
    given: Arc<AtomicUsize>,
}

impl Routes {
    /// No routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers `GET path` with `200` and `value`.
    pub fn json(self, path: &str, value: Value) -> Self {
        self.reply(path, Reply::Json(200, value))
    }

    /// Answers `GET path` with `reply`.
    pub fn reply(self, path: &str, reply: Reply) -> Self {
        self.in_turn(path, vec![reply])
    }

    /// Answers the `GET`s of `path` with `replies` in turn, then with the last one (a proxy's
    /// metrics that grew between two scrapes).
    pub fn in_turn(mut self, path: &str, replies: Vec<Reply>) -> Self {
        assert!(!replies.is_empty(), "{path}: no replies to give");
        let given = Arc::new(AtomicUsize::new(0));
        self.0.insert(path.to_owned(), InTurn { replies, given });
        self
    }

    /// The answer to `request`, if it is a `GET` of a known path.
    pub fn answer(&self, request: &Request) -> Option<Reply> {
        if request.method != "GET" {
            return None;
        }
        let answers = self.0.get(&request.path)?;
        if request.query.contains("watch=") {
            return Some(Reply::Pending);
        }
        let turn = answers.given.fetch_add(1, Ordering::SeqCst);
        let last = answers.replies.len() - 1;
        Some(answers.replies[turn.min(last)].clone())
    }
}

type Body = BoxBody<Bytes, Infallible>;

/// The running fake: its address, what it received; stopped on drop.
pub struct FakeKube {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Request>>>,
    count: watch::Receiver<usize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKube {
    /// Serves [`Routes`] only: anything else is not found.
    pub fn routes(routes: Routes) -> Self {
        Self::serve(move |request| routes.answer(request).unwrap_or_else(not_found))
    }

    /// Serves every request with `answer`, on a loopback port of its own.
    pub fn serve(answer: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("its address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count_tx, count) = watch::channel(0usize);
        let (stop, stopped) = oneshot::channel();
        let recorded = seen.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let state = Arc::new((answer, recorded, count_tx));
                tokio::select! {
                    _ = stopped => {}
                    () = accept(listener, state) => {}
                }
            });
        });
        Self {
            addr,
            seen,
            count,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in order.
    pub fn seen(&self) -> Vec<Request> {
        self.seen.lock().expect("not poisoned").clone()
    }

    /// The number of requests received, updated as they come.
    pub fn count(&self) -> watch::Receiver<usize> {
        self.count.clone()
    }

    /// Writes `<dir>/kubeconfig`, whose current context (`fake`) and a second one (`other`,
    /// pointing at a closed port) name users without credentials; returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n\
             - {{name: fake, cluster: {{server: '{}'}}}}\n\
             - {{name: closed, cluster: {{server: 'http://127.0.0.1:1'}}}}\n\
             users: [{{name: u, user: {{}}}}]\ncontexts:\n\
             - {{name: fake, context: {{cluster: fake, user: u}}}}\n\
             - {{name: other, context: {{cluster: closed, user: u}}}}\n\
             current-context: fake\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write the kubeconfig");
        path
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type State<F> = (F, Arc<Mutex<Vec<Request>>>, watch::Sender<usize>);

async fn accept<F>(listener: tokio::net::TcpListener, state: Arc<State<F>>)
where
    F: Fn(&Request) -> Reply + Send + Sync + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

fn pending() -> hyper::Response<Body> {
    let pending = tokio_stream::pending::<Result<Frame<Bytes>, Infallible>>();
    hyper::Response::new(StreamBody::new(pending).boxed())
}

/// A watch response streaming `events` (nothing, and open, if another response took them).
fn streamed(events: Events) -> hyper::Response<Body> {
    let Some(receiver) = events.take_receiver() else {
        return pending();
    };
    let lines = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::UnboundedReceiverStream::new(receiver),
        |event| Ok(Frame::data(Bytes::from(format!("{event}\n")))),
    );
    hyper::Response::builder()
        .header("content-type", "application/json")
        .body(StreamBody::new(lines).boxed())
        .expect("a response")
}

async fn respond<F>(state: &State<F>, req: hyper::Request<Incoming>) -> hyper::Response<Body>
where
    F: Fn(&Request) -> Reply,
{
    let (answer, seen, count) = state;
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let request = Request {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        content_type: parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    };
    let reply = answer(&request);
    seen.lock().expect("not poisoned").push(request);
    count.send_modify(|n| *n += 1);
    let (status, content_type, body) = match reply {
        Reply::Json(status, value) => (status, "application/json", value.to_string()),
        Reply::Text(status, text) => (status, "text/plain", text),
        Reply::Pending => return pending(),
        Reply::Events(events) => return streamed(events),
    };
    hyper::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("a response")
}
