//! Serving a router on a listener that faces untrusted clients (ingest's device port):
//! HTTP/1.1 with a cap on open connections, a timeout for a request's head and a cap on
//! its size, and a graceful drain. One slow or hostile client can hold at most one
//! connection for at most the head timeout; past the connection cap a new connection gets
//! `503` with `Retry-After` and is closed.
//!
//! (`axum::serve` has none of these knobs; the operator ports keep using it.)

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The smallest head buffer hyper accepts.
pub const MIN_HEAD_BYTES: usize = 8192;

/// Limits of an edge listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeLimits {
    /// Connections open at once; past it, `503` + `Retry-After` and close.
    pub max_connections: usize,
    /// How long a client may take to send a request's line and headers (also how long an
    /// idle keep-alive connection waits for the next request).
    pub header_read_timeout: Duration,
    /// Largest request line + headers, bytes (at least [`MIN_HEAD_BYTES`]); past it,
    /// `431`.
    pub max_head_bytes: usize,
    /// Most header fields in a request; past it, `431`.
    pub max_headers: usize,
}

/// What happened at the edge (for metrics).
pub trait EdgeEvents: Send + Sync + 'static {
    /// A connection was refused at the cap.
    fn connection_refused(&self);
    /// Connections open now.
    fn connections_open(&self, n: usize);
}

/// The answer to a connection past the cap.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: 89\r\nConnection: close\r\n\r\n{\"error\":{\"field\":\"connection\",\"rule\":\"server.busy\",\"message\":\"too many open connections\"}}";

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits
/// for the open connections' in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: EdgeLimits,
    events: Arc<dyn EdgeEvents>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_head_bytes.max(MIN_HEAD_BYTES))
        .max_headers(limits.max_headers);
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: transient; back off a little.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            events.connection_refused();
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(BUSY)).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        events.connections_open(limits.max_connections.saturating_sub(slots.available_permits()));
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        let (slots, events) = (Arc::clone(&slots), Arc::clone(&events));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
            events
                .connections_open(limits.max_connections.saturating_sub(slots.available_permits()));
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;

    #[derive(Default)]
    struct Counts(AtomicUsize);
    impl EdgeEvents for Counts {
        fn connection_refused(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn connections_open(&self, _: usize) {}
    }

    async fn start(
        limits: EdgeLimits,
    ) -> (std::net::SocketAddr, Arc<Counts>, tokio_util::sync::CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let counts = Arc::new(Counts::default());
        let stop = tokio_util::sync::CancellationToken::new();
        let (c, s) = (Arc::clone(&counts) as Arc<dyn EdgeEvents>, stop.clone());
        tokio::spawn(async move {
            serve(listener, app, limits, c, async move { s.cancelled().await }).await
        });
        (addr, counts, stop)
    }

    fn limits() -> EdgeLimits {
        EdgeLimits {
            max_connections: 2,
            header_read_timeout: Duration::from_millis(300),
            max_head_bytes: MIN_HEAD_BYTES,
            max_headers: 16,
        }
    }

    /// What the server sent until it closed the connection (a guard of 30 s stops a
    /// test whose server never does; [`read_until_closed`] tells which happened).
    async fn answer(stream: &mut tokio::net::TcpStream) -> String {
        read_until_closed(stream).await.0
    }

    /// What the server sent, and whether it closed the connection (not the guard).
    async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> (String, bool) {
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut out));
        let closed = read.await.is_ok();
        (String::from_utf8_lossy(&out).into_owned(), closed)
    }

    #[tokio::test]
    async fn a_connection_past_the_cap_gets_503_with_retry_after() {
        let (addr, counts, stop) = start(limits()).await;
        let _a = tokio::net::TcpStream::connect(addr).await.expect("a");
        let _b = tokio::net::TcpStream::connect(addr).await.expect("b");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("c");
        let text = answer(&mut c).await;
        assert!(text.starts_with("HTTP/1.1 503") && text.contains("Retry-After: 1"), "{text}");
        assert!(text.contains("server.busy"), "{text}");
        assert_eq!(counts.0.load(Ordering::Relaxed), 1);
        stop.cancel();
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_cut_off() {
        let (addr, _, stop) = start(limits()).await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.expect("slow");
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.expect("partial head");
        let (text, closed) = read_until_closed(&mut slow).await;
        // Closed by the server (408 or nothing), not left open until the guard.
        assert!(closed, "still open: {text}");
        assert!(!text.contains("200 OK"), "{text}");
        // Its slot is free again: two more connections are served.
        for _ in 0..2 {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("next");
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .expect("req");
            assert!(answer(&mut s).await.starts_with("HTTP/1.1 200"));
        }
        stop.cancel();
    }

    #[tokio::test]
    async fn an_oversized_head_gets_431() {
        let (addr, _, stop) = start(limits()).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("conn");
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(2 * MIN_HEAD_BYTES)
        );
        let _ = s.write_all(big.as_bytes()).await;
        let text = answer(&mut s).await;
        assert!(text.starts_with("HTTP/1.1 431"), "{text}");
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("conn");
        let many: String = (0..40).map(|i| format!("X-H{i}: v\r\n")).collect();
        let _ = s.write_all(format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes()).await;
        let text = answer(&mut s).await;
        assert!(text.starts_with("HTTP/1.1 431"), "{text}");
        stop.cancel();
    }
}
