//! One event-stream request on its own connection, served without hyper
//! (why: see [`super::serve`]): read the request head, run it through the
//! router, write the response head, then write the body chunk by chunk as
//! the stream yields it, while watching the connection only for the client
//! hanging up. The connection closes when the response ends.
//!
//! Kept deliberately small: one request, `GET` with no body (anything with
//! a body is refused), HTTP/1.1 chunked or, for an HTTP/1.0 client, the body
//! delimited by the close.

use std::io::{self, IoSlice, Write as _};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::serve::ConnService;

/// Largest request head accepted (hyper's default limit is larger, but a
/// stream request carries a cookie or a token and little else).
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// How long the whole request head may take to arrive.
const HEAD_WAIT: Duration = Duration::from_secs(30);

/// Serves the connection's one request.
pub async fn serve(mut stream: TcpStream, service: ConnService, shutdown: CancellationToken) {
    // Events are coalesced by the stream itself: each write should leave now.
    let _ = stream.set_nodelay(true);
    let request = tokio::select! {
        r = read_request(&mut stream) => r,
        _ = shutdown.cancelled() => return,
    };
    let request = match request {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err((status, why)) => {
            let _ = refuse(&mut stream, status, why).await;
            return;
        }
    };
    let http10 = request.version() == Version::HTTP_10;
    let Ok(response) = service.oneshot(request).await;
    if let Err(e) = respond(&mut stream, response, http10).await {
        tracing::trace!(error = %e, "event stream connection ended");
    }
}

/// A request refused before it reached the router: its status and why.
pub type Refusal = (StatusCode, &'static str);

/// Reads and parses the request head; `None` if the client left or was too
/// slow.
async fn read_request(stream: &mut TcpStream) -> Result<Option<Request<Body>>, Refusal> {
    let mut buf = Vec::with_capacity(1024);
    let deadline = Instant::now() + HEAD_WAIT;
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len());
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Err(_) | Ok(Err(_)) | Ok(Ok(0)) => return Ok(None),
            Ok(Ok(_)) => {}
        }
        if let Some(request) = parse_head(&buf)? {
            return Ok(Some(request));
        }
        if buf.len() >= MAX_HEAD {
            return Err((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "the request head is too large",
            ));
        }
    }
}

/// The request, once `buf` holds its whole head; `None` while it is still
/// arriving. Public for the fuzz target (`fuzz/`).
pub fn parse_head(buf: &[u8]) -> Result<Option<Request<Body>>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    match head.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many request headers",
            ))
        }
        Err(_) => return Err((StatusCode::BAD_REQUEST, "malformed request")),
    }
    let bad = |why| (StatusCode::BAD_REQUEST, why);
    let method = Method::from_bytes(head.method.unwrap_or_default().as_bytes())
        .map_err(|_| bad("malformed method"))?;
    let version = match head.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut request = Request::builder()
        .method(method)
        .uri(head.path.unwrap_or("/"))
        .version(version)
        .body(Body::empty())
        .map_err(|_| bad("malformed request target"))?;
    let map = request.headers_mut();
    for h in head.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("malformed header"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| bad("malformed header"))?;
        map.append(name, value);
    }
    // N.B.: a body would be left unread in the connection: refuse it. Every
    // Content-Length counts (the router may read any of them), not the first.
    let has_body = map.contains_key(header::TRANSFER_ENCODING)
        || map
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes() != b"0");
    if has_body {
        return Err(bad("an event stream request has no body"));
    }
    Ok(Some(request))
}

/// Answers a request that could not be read, and closes.
async fn refuse(stream: &mut TcpStream, status: StatusCode, why: &str) -> io::Result<()> {
    let body = format!("{why}\n");
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Writes the response: head, then the body as it comes, until it ends or
/// the client leaves.
async fn respond(stream: &mut TcpStream, response: Response<Body>, http10: bool) -> io::Result<()> {
    let (parts, body) = response.into_parts();
    let length = body.size_hint().exact();
    // HTTP/1.0 knows no chunks: there the close ends the body.
    let chunked = length.is_none() && !http10;
    let mut head = Vec::with_capacity(512);
    write!(
        head,
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    )?;
    for (name, value) in &parts.headers {
        if name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || name == header::CONTENT_LENGTH
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if let Some(n) = length {
        write!(head, "content-length: {n}\r\n")?;
    } else if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    stream.write_all(&head).await?;
    drop(head);

    let mut body = body.into_data_stream();
    let mut scratch = [0u8; 64];
    loop {
        let next = tokio::select! {
            biased;
            ready = stream.readable() => Next::Readable(ready),
            chunk = body.next() => Next::Chunk(chunk),
        };
        match next {
            // Anything the client sends now is ignored; its end ends the stream.
            Next::Readable(ready) => {
                ready?;
                match stream.try_read(&mut scratch) {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            Next::Chunk(Some(Ok(data))) if data.is_empty() => {}
            Next::Chunk(Some(Ok(data))) => write_chunk(stream, data, chunked).await?,
            Next::Chunk(Some(Err(e))) => return Err(io::Error::other(e)),
            Next::Chunk(None) => break,
        }
    }
    if chunked {
        stream.write_all(b"0\r\n\r\n").await?;
    }
    stream.shutdown().await
}

enum Next {
    Readable(io::Result<()>),
    Chunk(Option<Result<Bytes, axum::Error>>),
}

async fn write_chunk(stream: &mut TcpStream, data: Bytes, chunked: bool) -> io::Result<()> {
    if !chunked {
        return stream.write_all(&data).await;
    }
    let mut size = [0u8; 18];
    let n = {
        let mut w = &mut size[..];
        write!(w, "{:x}\r\n", data.len())?;
        18 - w.len()
    };
    write_all_vectored(
        stream,
        &mut [
            IoSlice::new(&size[..n]),
            IoSlice::new(&data),
            IoSlice::new(b"\r\n"),
        ],
    )
    .await
}

/// `write_all` for several buffers in as few system calls as the socket
/// allows.
async fn write_all_vectored(
    stream: &mut TcpStream,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    while !bufs.is_empty() {
        let n = stream.write_vectored(bufs).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_becomes_a_request() {
        let head = b"GET /api/jobs/3/events?after=7 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 9\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n";
        let req = parse_head(head).unwrap().unwrap();
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/api/jobs/3/events");
        assert_eq!(req.uri().query(), Some("after=7"));
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["last-event-id"], "9");
        assert_eq!(req.headers().get_all("cookie").iter().count(), 2);
        assert_eq!(
            parse_head(b"GET /api/events HTTP/1.0\r\n\r\n")
                .unwrap()
                .unwrap()
                .version(),
            Version::HTTP_10
        );
    }

    #[test]
    fn a_partial_head_waits_and_a_bad_one_is_refused() {
        assert!(parse_head(b"GET /api/events HTTP/1.1\r\nHost: x\r\n")
            .unwrap()
            .is_none());
        let status = |h: &[u8]| parse_head(h).unwrap_err().0;
        assert_eq!(
            status(b"GET /api/events HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(b"GET /api/events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(b"GET /api/events HTTP/1.1\r\nBad Header: x\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect();
        assert_eq!(
            status(format!("GET /api/events HTTP/1.1\r\n{many}\r\n").as_bytes()),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert!(
            parse_head(b"GET /api/events HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn a_second_content_length_cannot_smuggle_a_body_past_a_zero() {
        // Found by the request_head fuzz target: only the first value was read.
        let head =
            b"GET /api/events HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse_head(head).unwrap_err().0, StatusCode::BAD_REQUEST);
        let zeros = b"GET /api/events HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n";
        assert!(parse_head(zeros).unwrap().is_some());
    }
}
