//! Reading a proxy's `/tap` stream from inside its network namespace: a GET whose chunked
//! response is a line of JSON per event, handed on line by line as it arrives.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use super::netns::connect_in;

/// Time to connect and to get the response head.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Longest line accepted from a proxy (events are a few hundred bytes).
const MAX_LINE: usize = 64 * 1024;

/// Opens `/tap?<query>` on `port` of 127.0.0.1 in `netns`; returns the stream once the
/// proxy accepted the listener (its 200 is in), or why not.
pub fn open(netns: &str, port: u16, query: &str) -> Result<TapReader, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = connect_in(netns, addr, TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let request = format!("GET /tap?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).map_err(|e| e.to_string())?;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
    }
    if !status.starts_with("HTTP/1.1 200") {
        let mut body = String::new();
        let _ = reader.take(4096).read_to_string(&mut body);
        return Err(format!("{} {}", status.trim(), body.trim()));
    }
    if !chunked {
        return Err("the tap answered without a chunked stream".to_owned());
    }
    // Events come when traffic does: wait for them as long as it takes.
    reader
        .get_ref()
        .set_read_timeout(None)
        .map_err(|e| e.to_string())?;
    Ok(TapReader {
        reader,
        pending: Vec::new(),
    })
}

/// Calls `notify` on the first Ctrl-C (SIGINT) instead of letting it end the process. Call it
/// before starting other threads: they inherit the blocked signal, so the waiting thread is
/// the one that takes it.
pub fn on_interrupt(notify: impl FnOnce() + Send + 'static) -> Result<(), String> {
    use nix::sys::signal::{SigSet, Signal};
    let mut interrupt = SigSet::empty();
    interrupt.add(Signal::SIGINT);
    interrupt.thread_block().map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        if interrupt.wait().is_ok() {
            notify();
        }
    });
    Ok(())
}

/// The lines of one tap stream.
pub struct TapReader {
    reader: BufReader<TcpStream>,
    /// Bytes of a line not complete yet.
    pending: Vec<u8>,
}

impl TapReader {
    /// The next complete line; `None` when the stream ended (the proxy closed it).
    pub fn next_line(&mut self) -> Option<String> {
        loop {
            if let Some(at) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=at).collect();
                return Some(String::from_utf8_lossy(&line[..at]).into_owned());
            }
            if self.pending.len() > MAX_LINE {
                return None;
            }
            let chunk = self.next_chunk()?;
            self.pending.extend_from_slice(&chunk);
        }
    }

    /// One chunk of the chunked body; `None` at its end or on any error.
    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        let mut size = String::new();
        if self.reader.read_line(&mut size).ok()? == 0 {
            return None;
        }
        let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        if size == 0 || size > MAX_LINE {
            return None;
        }
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk).ok()?;
        chunk.truncate(size);
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn lines_are_put_together_across_chunks() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            peer.write_all(b"5\r\n{\"a\":\r\n").unwrap();
            peer.write_all(b"9\r\n1}\n{\"b\":2\r\n3\r\n}\n\n\r\n0\r\n\r\n")
                .unwrap();
        });
        let mut tap = TapReader {
            reader: BufReader::new(TcpStream::connect(addr).unwrap()),
            pending: Vec::new(),
        };
        assert_eq!(tap.next_line().as_deref(), Some("{\"a\":1}"));
        assert_eq!(tap.next_line().as_deref(), Some("{\"b\":2}"));
        assert_eq!(tap.next_line().as_deref(), Some(""));
        assert_eq!(tap.next_line(), None);
        writer.join().unwrap();
    }
}
