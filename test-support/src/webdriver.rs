//! A minimal WebDriver client (the W3C protocol, JSON over HTTP/1.1) driving Debian's
//! headless `chromium` through `chromedriver`: start a browser, open a URL, run a script,
//! take a screenshot. Enough for tests that look at a page as a user would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// Where Debian's `chromium-driver` and `chromium` put their programs.
const DRIVER: &str = "/usr/bin/chromedriver";
const BROWSER: &str = "/usr/bin/chromium";
/// How long one WebDriver command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The browser's programs, or why they are missing (with how to install them).
pub fn programs() -> Result<(PathBuf, PathBuf), String> {
    let (driver, browser) = (PathBuf::from(DRIVER), PathBuf::from(BROWSER));
    for program in [&driver, &browser] {
        if !program.is_file() {
            return Err(format!(
                "{} is missing: install Debian's chromium and chromium-driver \
                 (scripts/host-packages.sh does)",
                program.display()
            ));
        }
    }
    Ok((driver, browser))
}

/// A headless browser session; the session and the driver end when it is dropped.
pub struct Browser {
    address: SocketAddr,
    session: String,
    _driver: GroupKilledOnDrop,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless chromium session in a window of
    /// `width` × `height`.
    pub fn start(width: u32, height: u32) -> Result<Browser, String> {
        let (driver, browser) = programs()?;
        // A process group of its own: the browser it starts goes with it, even when no
        // session was made.
        let mut child = Command::new(&driver)
            .arg("--port=0")
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", driver.display()))?;
        let stdout = child.stdout.take().ok_or("chromedriver has no stdout")?;
        let child = GroupKilledOnDrop(child);
        // "ChromeDriver was started successfully on port 40123."
        let mut lines = BufReader::new(stdout).lines();
        let port = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                let rest = line.split("started successfully on port ").nth(1)?;
                rest.trim_end_matches('.').trim().parse::<u16>().ok()
            })
            .ok_or("chromedriver never said which port it listens on")?;
        // Keep reading its output so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", format!("--window-size={width},{height}")],
            },
        }}});
        let answer = request(address, "POST", "/session", Some(&capabilities))?;
        let session = answer["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session in {answer}"))?
            .to_owned();
        Ok(Browser {
            address,
            session,
            _driver: child,
        })
    }

    fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let path = format!("/session/{}{path}", self.session);
        request(self.address, method, &path, body)
    }

    /// Opens `url` and waits for it to load.
    pub fn open(&self, url: &str) -> Result<(), String> {
        self.command("POST", "/url", Some(&json!({"url": url})))
            .map(drop)
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub fn run(&self, script: &str) -> Result<Value, String> {
        self.command(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": []})),
        )
    }

    /// Runs `script` in the page (every 200 ms, for a minute at most) until it returns
    /// something `accept` takes, and returns that; panics naming `what` with the last value
    /// the page gave otherwise.
    pub fn wait_for(&self, what: &str, script: &str, accept: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + PAGE_PATIENCE;
        loop {
            let last = self.run(script).unwrap_or_else(Value::String);
            if accept(&last) {
                return last;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: the page shows {last}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// Writes a PNG screenshot of the window to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<(), String> {
        let encoded = self.command("GET", "/screenshot", None)?;
        let png = decode_base64(encoded.as_str().ok_or("a screenshot that is not text")?)?;
        std::fs::write(path, png).map_err(|e| format!("writing {}: {e}", path.display()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(
            self.address,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

/// How long [`Browser::wait_for`] waits for a page to show what it looks for.
const PAGE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// The folder where a test run keeps `name`'s artifacts (screenshots):
/// `<target>/e2e-artifacts/<name>`, created; `target` is `CARGO_TARGET_DIR` or the workspace's.
pub fn artifacts(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("e2e-artifacts").join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// chromedriver and everything it started, killed and reaped when dropped.
struct GroupKilledOnDrop(Child);

impl Drop for GroupKilledOnDrop {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// One WebDriver command: its `value`, or the error it answered. chromedriver keeps the
/// connection open whatever the request asks, so the answer is read by its Content-Length.
fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let fail = |e: std::io::Error| format!("WebDriver {method} {path}: {e}");
    let stream = TcpStream::connect(address).map_err(fail)?;
    stream
        .set_read_timeout(Some(COMMAND_TIMEOUT))
        .map_err(fail)?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    (&stream).write_all(head.as_bytes()).map_err(fail)?;
    (&stream).write_all(body.as_bytes()).map_err(fail)?;
    let mut reader = BufReader::new(&stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).map_err(fail)?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(fail)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut payload = vec![0; length];
    reader.read_exact(&mut payload).map_err(fail)?;
    let payload = String::from_utf8_lossy(&payload);
    let status_line = status_line.trim();
    let answer: Value = serde_json::from_str(&payload)
        .map_err(|e| format!("WebDriver {method} {path}: {e} in {status_line}: {payload}"))?;
    let value = answer.get("value").cloned().unwrap_or(Value::Null);
    if status_line.contains(" 200 ") {
        Ok(value)
    } else {
        Err(format!("WebDriver {method} {path}: {status_line}: {value}"))
    }
}

/// Standard base64, as WebDriver sends screenshots (whitespace, if any, ignored).
fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let compact: String = text.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(compact.trim_end_matches('='))
        .map_err(|e| format!("a screenshot that is not base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(
            decode_base64("iVBO\nRw0K").unwrap(),
            [0x89, b'P', b'N', b'G', 0x0d, 0x0a]
        );
        assert!(decode_base64("a*b").is_err());
    }
}
