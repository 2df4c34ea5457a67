//! `meshctl dashboard`: a web UI of the mesh, the sandbox's or a Kubernetes cluster's, served
//! from the meshctl binary.
//!
//! It shows what the verbs print, through the same functions: `check`'s checks, `stat`'s rows
//! and `edges`' pairs from the same two-scrape window over every proxy's `/metrics`,
//! `routes`' rows, `tap`'s streams and `proxy-config certs`' certificates. A sampler thread
//! refreshes them every few seconds and keeps the last minutes of each row's figures; the
//! browser hears each refresh, and a tap, over server-sent events. The page (HTML, CSS and
//! plain JavaScript drawing SVG) is compiled in: nothing is fetched from elsewhere.
//!
//! In Kubernetes mode (`--kubeconfig`, `--context`) the same figures come through the API
//! server as the Kubernetes-mode verbs read them (`source`); certificates come from the
//! proxies' certificate gauges, and there is no live tap (the admin port is out of reach).
//!
//! Layers (a module imports only those listed before it): `options`, `history`, `certs`,
//! `query`, `requests` and `assets` (pure), `graph` (on `requests`); `source` (on `certs`);
//! `sampler` (on `options`, `history`, `certs`, `requests`, `source`); `api` (on
//! `sampler`, `graph`, `history`, `query`); `events` (on `sampler`, `api` and `query`); `server` (on all).

mod api;
mod assets;
mod certs;
mod events;
mod graph;
mod history;
mod options;
mod query;
mod requests;
mod sampler;
mod server;
mod source;

pub use options::DashboardOptions;
pub use server::run;
pub use source::Source;
