//! The API's HTTP/1 server: an accept loop that outlives running out of descriptors, a bounded set
//! of connections in which the one idle longest makes room for a newcomer (so idle connections
//! cannot shut a good client out), and timeouts on headers and on idleness. A TLS handshake
//! happens inside the same limits and timeouts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Connections served at once; past it the one idle longest is closed for a new one.
pub const MAX_CONNECTIONS: usize = 64;
/// A request's headers must arrive within this, or the connection is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request in progress for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// After an accept error (no descriptors, no memory), how long to wait before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Accept errors are logged at most this often (a flood would log each).
const ACCEPT_WARNING_EVERY: Duration = Duration::from_secs(60);
/// How often a connection looks whether it has been idle too long.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The address a request came from, in its extensions.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// Runs the server on `listener` until it fails; builds its own runtime, so a restart begins clean.
/// With `tls`, every connection is a TLS one (see [`super::tls`]).
pub fn serve_once(
    listener: &std::net::TcpListener,
    app: axum::Router,
    tls: Option<TlsAcceptor>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let listener = listener.try_clone()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        accept_loop(listener, app, tls).await
    })
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<TlsAcceptor>,
) -> anyhow::Result<()> {
    let connections = Arc::new(Connections::new());
    // Lowered when descriptors run out before MAX_CONNECTIONS, raised again one by one.
    let mut limit = MAX_CONNECTIONS;
    let mut warned: Option<Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Running out of descriptors passes once some close: never a reason to stop.
                if warned.is_none_or(|at| at.elapsed() >= ACCEPT_WARNING_EVERY) {
                    warned = Some(Instant::now());
                    tracing::warn!(
                        "management API: accepting a connection failed: {err}; retrying"
                    );
                }
                if out_of_descriptors(&err) {
                    limit = connections.len().saturating_sub(1).max(1);
                }
                if connections.close_longest_idle() {
                    // Lets the closed connection's task run and give its descriptor back.
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                continue;
            }
        };
        let admission = connections.admit(limit);
        limit = (limit + 1).min(MAX_CONNECTIONS);
        let Some(connection) = admission else {
            tracing::debug!("management API: {peer} refused, every connection is busy");
            continue;
        };
        tokio::spawn(serve_connection(
            stream,
            peer,
            app.clone(),
            connection,
            tls.clone(),
        ));
        // Before the next accept: the new connection reads the request already waiting on it
        // (and so is busy, not idle), and one closed for it frees its descriptor. Without this a
        // burst of accepts could close a good client as "idle" before its request was read.
        tokio::task::yield_now().await;
    }
}

fn out_of_descriptors(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: axum::Router,
    connection: Admitted,
    tls: Option<TlsAcceptor>,
) {
    let state = &connection.state;
    // The handshake counts as idle time: a client that connects and never says hello is closed
    // for a newcomer or timed out like one that never sends a request.
    let served = async {
        let Some(acceptor) = tls else {
            return serve_http(stream, peer, app, state).await;
        };
        match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => serve_http(stream, peer, app, state).await,
            Ok(Err(err)) => {
                tracing::debug!("management API: TLS handshake with {peer} failed: {err}")
            }
            Err(_) => tracing::debug!(
                "management API: no TLS handshake from {peer} within {HEADER_TIMEOUT:?}, closed"
            ),
        }
    };
    tokio::select! {
        () = served => {}
        () = state.close.notified() => {
            tracing::debug!("management API: idle connection from {peer} closed for a new one");
        }
        () = idle_too_long(state) => {
            tracing::debug!("management API: connection from {peer} idle too long, closed");
        }
    }
}

/// Serves HTTP/1 requests on `stream` (plain TCP or TLS) until the client or hyper ends it.
async fn serve_http<S>(stream: S, peer: SocketAddr, app: axum::Router, state: &Arc<ConnectionState>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::clone(state);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(Peer(peer));
        let busy = Busy::start(Arc::clone(&state));
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await;
            drop(busy);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    if let Err(err) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!("management API: connection from {peer}: {err}");
    }
}

/// Returns once the connection has had no request in progress for [`IDLE_TIMEOUT`].
async fn idle_too_long(state: &ConnectionState) {
    loop {
        tokio::time::sleep(IDLE_CHECK).await;
        if state.idle_for() >= Some(IDLE_TIMEOUT) {
            return;
        }
    }
}

/// What a connection shares with the set that admitted it.
struct ConnectionState {
    /// Requests being served on it now.
    in_progress: AtomicUsize,
    /// When it last had none, in milliseconds since `epoch`.
    idle_since_ms: AtomicU64,
    epoch: Instant,
    close: Notify,
}

impl ConnectionState {
    /// How long it has had no request in progress; `None` while one is.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_progress.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.epoch.elapsed().saturating_sub(since))
    }

    fn mark_idle(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.idle_since_ms.store(now, Ordering::Release);
    }
}

/// One request in progress on a connection, from its headers to its answer.
struct Busy(Arc<ConnectionState>);

impl Busy {
    fn start(state: Arc<ConnectionState>) -> Busy {
        state.in_progress.fetch_add(1, Ordering::AcqRel);
        Busy(state)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.mark_idle();
        self.0.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connections open now.
struct Connections {
    open: Mutex<HashMap<u64, Arc<ConnectionState>>>,
    next_id: AtomicU64,
    epoch: Instant,
}

/// A connection's place in [`Connections`], given up when it is dropped.
struct Admitted {
    id: u64,
    state: Arc<ConnectionState>,
    connections: Arc<Connections>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}

impl Connections {
    fn new() -> Connections {
        Connections {
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnectionState>>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    /// A place for a new connection, closing the longest idle ones while `limit` are open;
    /// `None` when every connection has a request in progress.
    fn admit(self: &Arc<Self>, limit: usize) -> Option<Admitted> {
        let mut open = self.lock();
        while open.len() >= limit {
            let longest_idle = longest_idle(&open)?;
            // Its task removes it from the set once it has closed; until then it is no longer
            // a candidate.
            if let Some(state) = open.remove(&longest_idle) {
                state.close.notify_one();
            }
        }
        let state = Arc::new(ConnectionState {
            in_progress: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            epoch: self.epoch,
            close: Notify::new(),
        });
        state.mark_idle();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        open.insert(id, Arc::clone(&state));
        let admitted = Admitted {
            id,
            state,
            connections: Arc::clone(self),
        };
        Some(admitted)
    }

    /// Closes the connection idle longest, to free a descriptor; false if none is idle.
    fn close_longest_idle(&self) -> bool {
        let mut open = self.lock();
        let Some(state) = longest_idle(&open).and_then(|id| open.remove(&id)) else {
            return false;
        };
        state.close.notify_one();
        true
    }
}

fn longest_idle(open: &HashMap<u64, Arc<ConnectionState>>) -> Option<u64> {
    open.iter()
        .filter_map(|(id, state)| Some((*id, state.idle_for()?)))
        .max_by_key(|(_, idle)| *idle)
        .map(|(id, _)| id)
}
