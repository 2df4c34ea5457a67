//! A small client of Prometheus's HTTP API for `meshctl stat --prometheus`: instant queries
//! (`GET /api/v1/query?query=…`) with the sandbox's blocking GET ([`super::admin`]),
//! `http://` only, each bounded by a timeout, optionally connecting from inside a network
//! namespace (the sandbox's Prometheus lives where it can reach the proxies, not on the host).

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use http::Uri;

use super::admin::{self, percent_encode};
use crate::operator::promql::{self, PrometheusError, VectorSample, parse_vector, queries};
use crate::operator::stat::Target;
use crate::operator::window::{Measured, StatOptions};

/// Where Prometheus answers, parsed once from `http://host[:port][/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrometheusUrl {
    /// As the user wrote it, for messages.
    text: String,
    /// Host, without IPv6 brackets.
    host: String,
    /// Port (9090, Prometheus's, when the URL has none).
    port: u16,
    /// `host[:port]` as written: the Host header.
    authority: String,
    /// A route prefix (`--web.route-prefix`), without the trailing slash; empty for none.
    prefix: String,
}

impl PrometheusUrl {
    /// Parses `http://host[:port][/prefix]`; anything else is refused with why.
    pub fn parse(url: &str) -> Result<Self, PrometheusError> {
        let invalid = |reason: &str| PrometheusError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|e: http::uri::InvalidUri| {
            invalid(&format!("{e} (expected http://host:port)"))
        })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(invalid(&format!(
                    "{other}:// is not supported, only http:// (put a TLS-terminating proxy \
                     in front, or reach Prometheus directly)"
                )));
            }
            None => return Err(invalid("no scheme: write http://host:port")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user info is not supported"));
        }
        if uri.query().is_some() {
            return Err(invalid("a query string is not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        Ok(Self {
            text: url.to_owned(),
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(9090),
            authority: authority.as_str().to_owned(),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The request target of the instant query `promql`.
    fn query_target(&self, promql: &str) -> String {
        format!(
            "{}/api/v1/query?query={}",
            self.prefix,
            percent_encode(promql)
        )
    }
}

/// A client of one Prometheus.
pub struct PrometheusClient {
    url: PrometheusUrl,
    /// The network namespace to connect from (`None`: meshctl's own).
    netns: Option<String>,
    /// The bound of each step of a query: connecting, asking, reading the answer.
    timeout: Duration,
}

impl PrometheusClient {
    /// A client of `url`, connecting from `netns` when given.
    pub fn new(url: PrometheusUrl, netns: Option<String>, timeout: Duration) -> Self {
        Self {
            url,
            netns,
            timeout,
        }
    }

    /// The instant vector `promql` evaluates to now.
    pub fn query(&self, promql: &str) -> Result<Vec<VectorSample>, PrometheusError> {
        let failed = |reason: String| PrometheusError::Query {
            url: self.url.text.clone(),
            query: promql.to_owned(),
            reason,
        };
        let (status, body) = self.get(&self.url.query_target(promql)).map_err(failed)?;
        let text = String::from_utf8_lossy(&body);
        match parse_vector(&text) {
            Ok(vector) if status == 200 => Ok(vector),
            Ok(_) => Err(failed(format!("HTTP {status}"))),
            // Prometheus explains its refusals (400, 422, 503) in a JSON body: its reason.
            Err(why) if status == 200 || text.trim_start().starts_with('{') => Err(failed(why)),
            Err(_) => Err(failed(format!("HTTP {status}: {}", first_line(&text)))),
        }
    }

    /// GETs `target`: the status and the body.
    fn get(&self, target: &str) -> Result<(u16, Vec<u8>), String> {
        let addr = self.resolve()?;
        let netns = self.netns.as_deref();
        admin::get_at(netns, addr, &self.url.authority, target, self.timeout)
            .map(|answer| (answer.status, answer.body))
            .map_err(|e| match netns {
                Some(netns) => format!("connecting to {addr} from network namespace {netns}: {e}"),
                None => format!("connecting to {addr}: {e}"),
            })
    }

    /// The first address of the URL's host.
    fn resolve(&self) -> Result<SocketAddr, String> {
        (self.url.host.as_str(), self.url.port)
            .to_socket_addrs()
            .map_err(|e| format!("resolving {}: {e}", self.url.host))?
            .next()
            .ok_or_else(|| format!("{} has no address", self.url.host))
    }
}

/// The first line of a body that is not Prometheus's (a proxy's error page, say).
fn first_line(body: &str) -> &str {
    body.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(empty body)")
}

/// How long one query to Prometheus may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The rows of `targets` from the Prometheus at `url`, connecting from `netns` (meshctl's own
/// namespace when `None`): one query per figure, over the last `options.window`.
pub fn measure(
    url: PrometheusUrl,
    netns: Option<String>,
    options: &StatOptions,
    targets: &[Target],
) -> Result<Measured, PrometheusError> {
    let client = PrometheusClient::new(url, netns, TIMEOUT);
    let mut answers = BTreeMap::new();
    for query in queries(
        options.resource,
        options.namespace.as_deref(),
        options.name.as_deref(),
        options.window,
    ) {
        answers.insert(query.measure, client.query(&query.promql)?);
    }
    Ok(Measured {
        window_seconds: options.window.as_secs_f64(),
        rows: promql::rows(options.resource, targets, &answers, options.window),
        unreachable: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_are_taken() {
        let url = PrometheusUrl::parse("http://127.0.0.1:9091/prom/").unwrap();
        assert_eq!(
            url.query_target("up{job=\"x\"}"),
            "/prom/api/v1/query?query=up%7Bjob%3D%22x%22%7D"
        );
        assert_eq!((url.port, url.authority.as_str()), (9091, "127.0.0.1:9091"));
        let default_port = PrometheusUrl::parse("http://prometheus").unwrap();
        assert_eq!(
            (default_port.port, default_port.prefix.as_str()),
            (9090, "")
        );
        for (bad, why) in [
            ("https://prometheus:9090", "https:// is not supported"),
            ("prometheus:9090", "http://"),
            ("localhost", "http://"),
            ("http://u:p@prometheus:9090", "user info"),
            ("http://prometheus:9090/?x=1", "query string"),
            ("http://", "host"),
        ] {
            let message = PrometheusUrl::parse(bad).unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("--prometheus {bad}: ")),
                "{message}"
            );
            assert!(message.contains(why), "{bad}: {message}");
        }
    }

    /// Answers one request on a local port with `answer`; yields the request's head.
    fn answer_once(answer: String) -> (u16, std::thread::JoinHandle<String>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            while reader.read_line(&mut head).unwrap() > 2 {}
            reader.get_mut().write_all(answer.as_bytes()).unwrap();
            head
        });
        (port, server)
    }

    fn http_answer(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn client(port: u16) -> PrometheusClient {
        let url = PrometheusUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        PrometheusClient::new(url, None, Duration::from_secs(10))
    }

    #[test]
    fn a_query_is_a_get_of_the_api_and_its_vector_is_read() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"ztunnel"},"value":[1765070000.5,"2"]}]}}"#;
        let (port, server) = answer_once(http_answer("200 OK", body));
        let vector = client(port).query("sum by (job) (up)").unwrap();
        assert_eq!(vector.len(), 1);
        assert_eq!(
            (vector[0].labels["job"].as_str(), vector[0].value),
            ("ztunnel", 2.0)
        );
        let head = server.join().unwrap();
        assert!(
            head.starts_with(
                "GET /api/v1/query?query=sum%20by%20%28job%29%20%28up%29 HTTP/1.1\r\n"
            ),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("host: 127.0.0.1:{port}\r\n")),
            "{head}"
        );
    }

    #[test]
    fn prometheuss_refusals_name_the_url_the_query_and_its_reason() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error: unclosed left parenthesis"}"#;
        let (port, server) = answer_once(http_answer("400 Bad Request", body));
        let message = client(port).query("sum(").unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "Prometheus at http://127.0.0.1:{port}: query `sum(`: bad_data: invalid parameter \
                 \"query\": 1:5: parse error: unclosed left parenthesis"
            )
        );
        server.join().unwrap();
        let (port, server) = answer_once(
            "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 12\r\n\r\nno upstream\n".to_owned(),
        );
        let message = client(port).query("up").unwrap_err().to_string();
        assert_eq!(
            message,
            format!("Prometheus at http://127.0.0.1:{port}: query `up`: HTTP 502: no upstream")
        );
        server.join().unwrap();
    }

    #[test]
    fn unreachable_prometheus_names_the_url_and_the_query() {
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let url = PrometheusUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let client = PrometheusClient::new(url, None, Duration::from_secs(5));
        let message = client.query("up").unwrap_err().to_string();
        assert!(
            message.starts_with(&format!(
                "Prometheus at http://127.0.0.1:{port}: query `up`: connecting to 127.0.0.1:{port}: "
            )),
            "{message}"
        );
    }
}
