//! The accept loop. Every connection is served by hyper (HTTP/1.1, with
//! upgrades for the terminal's WebSocket), except one whose first request
//! opens an event stream: that one is served by [`super::bare`], without
//! hyper. Both go through the same router (guard, permissions, trace).
//!
//! N.B.: why two ways. Thousands of browsers may each hold a stream open
//! for hours, and hyper keeps an 8 KiB read buffer and an 8 KiB header
//! buffer for every connection it serves, as long as it lives: on its own
//! more than an idle stream's whole budget (16 KiB; nginx with nchan needs
//! about 10). A stream's connection needs neither: its one request is read
//! into a buffer freed before the response starts, and the response is
//! written straight from the stream's own buffers.
//!
//! The loop peeks at the request line (without consuming it) to choose, so
//! hyper still sees every byte of the connections it gets. Which paths are
//! event streams it learns from the route table (`Kind::EventStream`), so a
//! renamed route can never fall back to hyper unnoticed.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Layer, ServiceExt};

use super::routes::path_matches;

/// The router with the client's address attached to every request.
pub type ConnService = axum::middleware::AddExtension<Router, ConnectInfo<SocketAddr>>;

/// How long a new connection may stay silent before it is handed to hyper
/// unlooked-at (which then treats it as it always did).
const FIRST_BYTES_WAIT: Duration = Duration::from_secs(30);
/// Bytes of the request line looked at: enough for any stream's path.
const PEEK: usize = 64;

/// Accepts connections until `shutdown`, then waits for the open ones: hyper
/// connections finish their requests (graceful shutdown), streams end.
/// `streams` are the event-stream routes' path patterns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    streams: Vec<String>,
    shutdown: CancellationToken,
) {
    let streams: Arc<[String]> = streams.into();
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let service = axum::Extension(ConnectInfo(peer)).layer(router.clone());
        connections.spawn(connection(
            stream,
            service,
            streams.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// A failed accept: the client's own trouble is skipped; anything else (out
/// of file descriptors) is logged and waited out, as hyper's examples do.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn connection(
    stream: TcpStream,
    service: ConnService,
    streams: Arc<[String]>,
    shutdown: CancellationToken,
) {
    match first_request(&stream, &streams).await {
        First::EventStream => super::bare::serve(stream, service, shutdown).await,
        First::Other => serve_hyper(stream, service, shutdown).await,
        First::Gone => {}
    }
}

async fn serve_hyper(stream: TcpStream, service: ConnService, shutdown: CancellationToken) {
    let service =
        TowerToHyperService::new(service.map_request(|req: Request<Incoming>| req.map(Body::new)));
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// What a connection's first request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum First {
    EventStream,
    Other,
    /// The client left before sending anything.
    Gone,
}

/// Looks at the start of the first request without consuming it.
async fn first_request(stream: &TcpStream, streams: &[String]) -> First {
    let mut buf = [0u8; PEEK];
    let deadline = Instant::now() + FIRST_BYTES_WAIT;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) => return First::Other,
            Ok(Ok(0)) | Ok(Err(_)) => return First::Gone,
            Ok(Ok(n)) => n,
        };
        if let Some(first) = classify(&buf[..n], streams) {
            return first;
        }
        // The request line is still arriving (it nearly always comes in one
        // piece): peeking again at once would only see the same bytes.
        if Instant::now() >= deadline {
            return First::Other;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Whether a request line starting with `head` opens an event stream (a
/// `GET` of one of `streams`); `None` while the bytes so far cannot tell.
fn classify(head: &[u8], streams: &[String]) -> Option<First> {
    let Some(rest) = head.strip_prefix(b"GET ") else {
        return if b"GET ".starts_with(head) {
            None
        } else {
            Some(First::Other)
        };
    };
    match rest.iter().position(|&b| b == b' ' || b == b'?') {
        Some(end) => {
            let path = std::str::from_utf8(&rest[..end]).unwrap_or_default();
            if streams.iter().any(|p| path_matches(p, path)) {
                Some(First::EventStream)
            } else {
                Some(First::Other)
            }
        }
        None if head.len() >= PEEK => Some(First::Other),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streams() -> Vec<String> {
        crate::http::route_table().event_streams()
    }

    fn classify(head: &[u8]) -> Option<First> {
        super::classify(head, &streams())
    }

    #[test]
    fn the_route_table_names_the_event_streams() {
        assert_eq!(
            streams(),
            ["/api/events", "/api/jobs/{id}/events", "/api/live"]
        );
    }

    #[test]
    fn only_stream_requests_are_taken_from_hyper() {
        let stream = Some(First::EventStream);
        let other = Some(First::Other);
        assert_eq!(classify(b"GET /api/jobs/12/events HTTP/1.1\r\n"), stream);
        assert_eq!(
            classify(b"GET /api/jobs/12/events?after=5 HTTP/1.1"),
            stream
        );
        assert_eq!(classify(b"GET /api/events HTTP/1.1\r\nHost: x"), stream);
        assert_eq!(classify(b"GET /api/jobs/12/log HTTP/1.1"), other);
        assert_eq!(classify(b"GET /api/jobs//events HTTP/1.1"), other);
        assert_eq!(classify(b"GET /api/events/more HTTP/1.1"), other);
        assert_eq!(classify(b"POST /api/jobs/12/events HTTP/1.1"), other);
        assert_eq!(classify(b"HEAD /api/events HTTP/1.1"), other);
        assert_eq!(classify(b"\x16\x03\x01"), other, "TLS is not ours either");
        assert_eq!(classify(&[b'G'; PEEK]), other);
        assert_eq!(
            classify(format!("GET /{} HTTP/1.1", "a".repeat(PEEK)).as_bytes()),
            other
        );
    }

    #[test]
    fn a_request_line_still_arriving_is_waited_for() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"GET "), None);
        assert_eq!(classify(b"GET /api/jobs/12/ev"), None);
    }
}
