//! A small HTTP/1.1 client for the management API on a raw socket, so a test controls exactly
//! what is sent: no token, a body generated while it is sent, a connection left idle.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// A response: its status, its head (status line and headers) and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    /// The value of header `name` (case-insensitive), if the answer has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (field, value) = line.split_once(':')?;
            field.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| {
            panic!(
                "HTTP {} body is not JSON ({err}): {}",
                self.status, self.body
            )
        })
    }
}

/// The request line and headers of a request that closes its connection after the answer.
pub fn head(method: &str, path: &str, token: Option<&str>, extra: &[String]) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: vigil\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

/// `method path` with `body` (sent whole) to `addr`.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> io::Result<Answer> {
    request_with(addr, method, path, token, &[], body)
}

/// Like [`request`], with `extra` header lines (`Cookie: ...`).
pub fn request_with(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: &[String],
    body: &[u8],
) -> io::Result<Answer> {
    let mut stream = connect(addr)?;
    let mut headers = extra.to_vec();
    headers.push(format!("Content-Length: {}", body.len()));
    stream.write_all(head(method, path, token, &headers).as_bytes())?;
    // A server may refuse on the headers and close before reading the body: its answer is
    // what counts, and writing the rest then fails.
    let written = stream.write_all(body);
    match read_answer(&mut stream) {
        Ok(answer) => Ok(answer),
        Err(err) => written.and(Err(err)),
    }
}

/// `POST path` whose body of `len` bytes is generated while it is sent, 64 KiB at a time, so
/// the test never holds it; with `chunked`, its length is not declared up front. Sending stops
/// when the server stops reading (it answered early and closed); the answer is returned.
pub fn post_generated(
    addr: &str,
    path: &str,
    token: Option<&str>,
    len: u64,
    chunked: bool,
) -> io::Result<Answer> {
    let mut stream = connect(addr)?;
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {len}")
    };
    stream.write_all(head("POST", path, token, &[framing]).as_bytes())?;
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || -> u64 {
        let block: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        let mut sent = 0u64;
        while sent < len {
            let n = (len - sent).min(block.len() as u64) as usize;
            let written = if chunked {
                writer
                    .write_all(format!("{n:x}\r\n").as_bytes())
                    .and_then(|()| writer.write_all(&block[..n]))
                    .and_then(|()| writer.write_all(b"\r\n"))
            } else {
                writer.write_all(&block[..n])
            };
            if written.is_err() {
                return sent;
            }
            sent += n as u64;
        }
        if chunked {
            let _ = writer.write_all(b"0\r\n\r\n");
        }
        sent
    });
    let answer = read_answer(&mut stream);
    // The server answered: whatever is still being sent goes nowhere.
    let _ = stream.shutdown(Shutdown::Both);
    sender.join().expect("sender thread");
    answer
}

fn connect(addr: &str) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    Ok(stream)
}

/// Reads a response up to the end of its body (by Content-Length, or to the close).
fn read_answer(stream: &mut TcpStream) -> io::Result<Answer> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    loop {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buffer[..n]);
        if let Some(end) = find(&received, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok());
            if length.is_some_and(|length| received.len() >= end + 4 + length) {
                break;
            }
        }
    }
    let end = find(&received, b"\r\n\r\n").ok_or_else(|| bad("no complete response head"))?;
    let head = String::from_utf8_lossy(&received[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad("no status code"))?;
    Ok(Answer {
        status,
        head: head.into_owned(),
        body: String::from_utf8_lossy(&received[end + 4..]).into_owned(),
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
