//! HTTP/1.x request and response heads, parsed with `httparse` (zero-copy, the parser hyper
//! uses) over a reassembled stream. Bodies are skipped by Content-Length; chunked and
//! close-delimited bodies end the parse of that direction, since nothing in them is evidence.

use percent_encoding::percent_decode_str;

use super::{Boundary, Start};

/// Headers read per message; more make the message unreadable (counted), not a bigger array.
const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Not HTTP (or damaged beyond repair).
    Invalid,
    /// The head grew past the configured limit without ending.
    HeadTooLarge,
    TooManyHeaders,
}

impl Error {
    pub const fn name(self) -> &'static str {
        match self {
            Error::Invalid => "invalid",
            Error::HeadTooLarge => "head_too_large",
            Error::TooManyHeaders => "too_many_headers",
        }
    }
}

/// A request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// As on the wire.
    pub uri: String,
    /// Percent-decoded (lossy UTF-8), what the server will act on: `/nice ports,/Trinity.txt.bak`.
    pub uri_decoded: String,
    /// `1.1`, `1.0`, or `0.9` for a request line without a version.
    pub version: &'static str,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub authorization: Option<String>,
    /// Length of the body that follows the head (0 when none is declared).
    pub body_len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub version: u8,
    pub body_len: Option<usize>,
    pub www_authenticate: Option<String>,
}

/// Parsing outcome over the bytes available so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// A whole head, and how many bytes of input it took.
    Complete(T, usize),
    /// More bytes are needed.
    Partial,
}

fn header<'h>(headers: &'h [httparse::Header<'_>], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

fn content_length(headers: &[httparse::Header<'_>]) -> Option<usize> {
    header(headers, "content-length")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok())
}

fn map_error(err: httparse::Error) -> Error {
    match err {
        httparse::Error::TooManyHeaders => Error::TooManyHeaders,
        _ => Error::Invalid,
    }
}

/// Parses a request head at the start of `buf`; `max_head` bounds how much is buffered.
pub fn parse_request(buf: &[u8], max_head: usize) -> Result<Parsed<Request>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let status = match request.parse(buf) {
        Ok(status) => status,
        Err(httparse::Error::TooManyHeaders) => return Err(Error::TooManyHeaders),
        // httparse is strict about the request line; scanners are not.
        Err(_) => return lenient_request(buf, max_head),
    };
    match status {
        httparse::Status::Partial => partial(buf, max_head),
        httparse::Status::Complete(len) => Ok(Parsed::Complete(
            request_from(
                request.method.unwrap_or_default(),
                request.path.unwrap_or_default(),
                if request.version == Some(0) {
                    "1.0"
                } else {
                    "1.1"
                },
                request.headers,
            ),
            len,
        )),
    }
}

fn partial<T>(buf: &[u8], max_head: usize) -> Result<Parsed<T>, Error> {
    if buf.len() > max_head {
        Err(Error::HeadTooLarge)
    } else {
        Ok(Parsed::Partial)
    }
}

fn request_from(
    method: &str,
    uri: &str,
    version: &'static str,
    headers: &[httparse::Header<'_>],
) -> Request {
    Request {
        method: method.to_string(),
        uri_decoded: percent_decode_str(uri).decode_utf8_lossy().into_owned(),
        uri: uri.to_string(),
        version,
        host: header(headers, "host").map(text),
        user_agent: header(headers, "user-agent").map(text),
        authorization: header(headers, "authorization").map(text),
        body_len: content_length(headers).unwrap_or(0),
    }
}

/// RFC 9110 token characters, what a method is made of.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The request lines httparse refuses but servers (and Zeek) read: `GET /HTTP/1.1` is HTTP/0.9
/// with the URI running to the end of the line, `GET / HTTP/1.` has a broken version, and
/// `OPTIONS HTTP/1.1` has no URI. Scanners send such lines on purpose, so they are read, not
/// dropped. The method must still be a token followed by a space.
fn lenient_request(buf: &[u8], max_head: usize) -> Result<Parsed<Request>, Error> {
    // Bare `\n` line ends are as common as `\r\n` in hand-made requests.
    let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
        return partial(buf, max_head);
    };
    let line = buf[..newline]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..newline]);
    let space = line.iter().position(|&b| b == b' ').ok_or(Error::Invalid)?;
    let (method, rest) = (&line[..space], &line[space + 1..]);
    if method.is_empty() || !method.iter().copied().all(is_token) {
        return Err(Error::Invalid);
    }
    let rest = rest.trim_ascii_start();
    let (uri, version): (&[u8], &'static str) = if rest.starts_with(b"HTTP/") {
        (&[], "1.0")
    } else {
        match rest.iter().position(|&b| b == b' ') {
            Some(at) if rest[at..].trim_ascii() == b"HTTP/1.1" => (&rest[..at], "1.1"),
            Some(at) => (&rest[..at], "1.0"),
            None => (rest, "0.9"),
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let head_rest = &buf[newline + 1..];
    match httparse::parse_headers(head_rest, &mut headers).map_err(map_error)? {
        httparse::Status::Partial => partial(buf, max_head),
        httparse::Status::Complete((used, headers)) => Ok(Parsed::Complete(
            request_from(
                std::str::from_utf8(method).map_err(|_| Error::Invalid)?,
                &String::from_utf8_lossy(uri),
                version,
                headers,
            ),
            newline + 1 + used,
        )),
    }
}

pub fn parse_response(buf: &[u8], max_head: usize) -> Result<Parsed<Response>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf).map_err(map_error)? {
        httparse::Status::Partial => {
            if buf.len() > max_head {
                Err(Error::HeadTooLarge)
            } else {
                Ok(Parsed::Partial)
            }
        }
        httparse::Status::Complete(len) => {
            let headers = response.headers;
            Ok(Parsed::Complete(
                Response {
                    status: response.code.unwrap_or(0),
                    reason: response.reason.unwrap_or_default().to_string(),
                    version: response.version.unwrap_or(1),
                    body_len: content_length(headers),
                    www_authenticate: header(headers, "www-authenticate").map(text),
                },
                len,
            ))
        }
    }
}

/// Request methods recognised where a stream's first bytes are judged.
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"TRACE ",
    b"CONNECT ",
    b"PATCH ",
];
/// Longest request line waited for when judging a resynchronisation candidate.
const MAX_REQUEST_LINE: usize = 8 * 1024;

/// Whether a stream's first bytes look like an HTTP request, for HTTP on unusual ports.
pub fn looks_like_request(start: &[u8]) -> bool {
    METHODS.iter().any(|m| start.starts_with(m))
}

/// Where the next request head plausibly starts in a client stream (see [`starts_request`]).
pub fn next_request(data: &[u8]) -> Boundary {
    next_line(data, starts_request)
}

/// Where the next response head plausibly starts in a server stream (see [`starts_response`]).
pub fn next_response(data: &[u8]) -> Boundary {
    next_line(data, starts_response)
}

/// The first line of `data` at which `starts` sees a head begin. Heads begin lines, so only the
/// front (where the stream's place is unknown) and the bytes after each line feed are judged:
/// `POST ` inside `CCM_POST / HTTP/1.1` is no request.
fn next_line(data: &[u8], starts: fn(&[u8]) -> Start) -> Boundary {
    let mut at = 0;
    while let Some(rest) = data.get(at..).filter(|rest| !rest.is_empty()) {
        match starts(rest) {
            Start::Yes => return Boundary::At(at),
            Start::Undecided => return Boundary::NotYet { discard: at },
            Start::No => {}
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(newline) => at += newline + 1,
            None => break,
        }
    }
    Boundary::NotYet {
        discard: data.len(),
    }
}

/// Whether a request line plausibly starts at the front of `buf`: a known method, then a line
/// ending in a version (`HTTP/...`). For a client stream picked up, or resumed after a gap, mid-message.
fn starts_request(buf: &[u8]) -> Start {
    if !looks_like_request(buf) {
        let prefix = METHODS.iter().any(|m| m.starts_with(buf));
        return if prefix { Start::Undecided } else { Start::No };
    }
    let Some(end) = buf.iter().take(MAX_REQUEST_LINE).position(|&b| b == b'\n') else {
        return if buf.len() < MAX_REQUEST_LINE {
            Start::Undecided
        } else {
            Start::No
        };
    };
    // As leniently as the request line is read: scanners send `GET / HTTP/1.` on purpose.
    let line = buf[..end].trim_ascii_end();
    match line.rsplit(|&b| b == b' ').next() {
        Some(version) if line.len() > version.len() && version.starts_with(b"HTTP/") => Start::Yes,
        _ => Start::No,
    }
}

/// Whether a status line plausibly starts at the front of `buf`: `HTTP/1.x` and a three-digit
/// status. For a server stream picked up, or resumed after a gap, mid-message.
fn starts_response(buf: &[u8]) -> Start {
    const SHAPE: &[u8] = b"HTTP/1.# ### ";
    let fits = |(&b, &shape): (&u8, &u8)| match shape {
        b'#' => b.is_ascii_digit(),
        _ => b == shape,
    };
    if !buf.iter().zip(SHAPE).all(fits) {
        Start::No
    } else if buf.len() < SHAPE.len() {
        Start::Undecided
    } else {
        Start::Yes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::smb2::test_streams;

    #[test]
    fn resync_finds_real_heads_and_nothing_in_their_bodies() {
        let Some(dir) = test_streams::pcap_dir() else {
            return;
        };
        let convs = test_streams::tcp_conversations(&dir.join("http/methods.pcap"), 80);
        let mut requests_found = 0;
        for conv in &convs {
            // One exchange per connection: a request (some of them deliberately malformed) and
            // an HTML page.
            let whole = matches!(
                parse_request(&conv.to_server, 65536),
                Ok(Parsed::Complete(
                    Request {
                        version: "1.0" | "1.1",
                        ..
                    },
                    _
                ))
            ) && looks_like_request(&conv.to_server);
            let found = next_request(&conv.to_server);
            assert_eq!(found == Boundary::At(0), whole, "{:?}", conv.client);
            requests_found += usize::from(whole);
            if !conv.to_client.is_empty() {
                assert_eq!(next_response(&conv.to_client), Boundary::At(0));
                let rest = next_response(&conv.to_client[1..]);
                assert!(matches!(rest, Boundary::NotYet { .. }), "{rest:?}");
            }
            let rest = next_request(conv.to_server.get(1..).unwrap_or(&[]));
            assert!(matches!(rest, Boundary::NotYet { .. }), "{rest:?}");
        }
        assert!(requests_found >= 8, "{requests_found} of {}", convs.len());
    }

    #[test]
    fn a_split_method_or_status_line_waits_for_more_bytes() {
        assert_eq!(starts_request(b"OPTI"), Start::Undecided);
        assert_eq!(starts_request(b"GET /index.html HTT"), Start::Undecided);
        assert_eq!(starts_request(b"GOT / HTTP/1.1\r\n"), Start::No);
        assert_eq!(starts_response(b"HTTP/1.1 2"), Start::Undecided);
        assert_eq!(starts_response(b"HTTP/1.1 OK "), Start::No);
    }

    #[test]
    fn nmap_probe_uri_is_decoded() {
        let wire = b"GET /nice%20ports%2C/Tri%6Eity.txt%2ebak HTTP/1.0\r\n\r\n";
        let Parsed::Complete(request, used) = parse_request(wire, 65536).expect("valid") else {
            panic!("complete head expected");
        };
        assert_eq!(used, wire.len());
        assert_eq!(request.method, "GET");
        assert_eq!(request.uri, "/nice%20ports%2C/Tri%6Eity.txt%2ebak");
        assert_eq!(request.uri_decoded, "/nice ports,/Trinity.txt.bak");
        assert_eq!(request.version, "1.0");
    }

    #[test]
    fn headers_and_body_length_are_read() {
        let wire = b"POST /x HTTP/1.1\r\nHost: web01\r\nUser-Agent: Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)\r\nContent-Length: 5\r\n\r\nhello";
        let Parsed::Complete(request, used) = parse_request(wire, 65536).expect("valid") else {
            panic!("complete head expected");
        };
        assert_eq!(request.host.as_deref(), Some("web01"));
        assert!(request
            .user_agent
            .as_deref()
            .is_some_and(|ua| ua.contains("Nmap")));
        assert_eq!(request.body_len, 5);
        assert_eq!(&wire[used..], b"hello");
    }

    #[test]
    fn a_head_that_never_ends_is_refused_at_the_limit() {
        let mut wire = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
        wire.extend(std::iter::repeat_n(b'a', 1 << 20));
        assert_eq!(parse_request(&wire, 65536), Err(Error::HeadTooLarge));
        assert_eq!(parse_request(&wire[..100], 65536), Ok(Parsed::Partial));
    }

    #[test]
    fn responses_give_status() {
        let wire = b"HTTP/1.0 404 File not found\r\nContent-Length: 0\r\n\r\n";
        let Parsed::Complete(response, _) = parse_response(wire, 65536).expect("valid") else {
            panic!("complete head expected");
        };
        assert_eq!(response.status, 404);
        assert_eq!(response.body_len, Some(0));
    }

    #[test]
    fn request_lines_httparse_refuses_are_read_as_servers_do() {
        let read = |wire: &[u8]| match parse_request(wire, 65536) {
            Ok(Parsed::Complete(request, used)) => {
                assert_eq!(used, wire.len());
                Some((request.method, request.uri, request.version, request.host))
            }
            _ => None,
        };
        let host = Some("www.google.com".to_string());
        assert_eq!(
            read(b"GET /HTTP/1.1\r\nHost: www.google.com\r\n\r\n"),
            Some(("GET".into(), "/HTTP/1.1".into(), "0.9", host.clone()))
        );
        assert_eq!(
            read(b"PUT / HTTP/1.\r\nHost: www.google.com\r\n\r\n"),
            Some(("PUT".into(), "/".into(), "1.0", host.clone()))
        );
        assert_eq!(
            read(b"OPTIONS HTTP/1.1\r\nHost: www.google.com\r\n\r\n"),
            Some(("OPTIONS".into(), String::new(), "1.0", host))
        );
        for refused in [
            &b"GET/ HTTP/1.1\r\n\r\n"[..],
            b"OPTIONS\r\n\r\n",
            b"\xc3\x83 / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                parse_request(refused, 65536),
                Err(Error::Invalid),
                "{refused:?}"
            );
        }
        assert_eq!(
            parse_request(b"GET /HTTP/1.1\r\nHost: a", 65536),
            Ok(Parsed::Partial)
        );
    }
}
