//! A unary gRPC request leaves the client in one write: its HEADERS frame and its DATA
//! frame together (the patched h2 in `vendor/h2`, see its PATCHED.md). Unpatched, the DATA
//! frame followed in a second write, so the server woke twice for every call (a Sell, a
//! CreateOrder).
//!
//! The second test checks what the patch must keep: a request reset before its HEADERS
//! are written still opens its stream before resetting it.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tonic::transport::{Endpoint, Server};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Every write the client made on its connection, as the bytes it wrote.
type Writes = Arc<Mutex<Vec<Vec<u8>>>>;

/// A TCP stream that records what each write call wrote.
struct Recording {
    stream: TcpStream,
    writes: Writes,
}

impl Recording {
    fn record(&self, bytes: &[u8]) {
        if let Ok(mut writes) = self.writes.lock() {
            writes.push(bytes.to_vec());
        }
    }
}

impl AsyncRead for Recording {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Recording {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            self.record(&buf[..*n]);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &polled {
            let written: Vec<u8> = bufs
                .iter()
                .flat_map(|b| b.iter().copied())
                .take(*n)
                .collect();
            self.record(&written);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;

/// The (frame type, stream id) of every whole HTTP/2 frame in one write.
fn frames(mut bytes: &[u8]) -> Vec<(u8, u32)> {
    if let Some(rest) = bytes.strip_prefix(PREFACE) {
        bytes = rest;
    }
    let mut frames = Vec::new();
    while let [l0, l1, l2, kind, _flags, s0, s1, s2, s3, rest @ ..] = bytes {
        let length = (usize::from(*l0) << 16) | (usize::from(*l1) << 8) | usize::from(*l2);
        let stream = u32::from_be_bytes([*s0, *s1, *s2, *s3]) & 0x7fff_ffff;
        frames.push((*kind, stream));
        bytes = rest.get(length..).unwrap_or_default();
    }
    frames
}

#[tokio::test]
async fn a_unary_request_leaves_in_one_write() {
    // The reporter says SERVING for the whole server ("") from the start.
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = tokio::spawn(
        Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let writes = Writes::default();
    let recorded = writes.clone();
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_| {
            let writes = recorded.clone();
            async move {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                Ok::<_, io::Error>(TokioIo::new(Recording { stream, writes }))
            }
        }))
        .await
        .expect("connect");
    let mut client = HealthClient::new(channel);
    // The first call also opens the connection (preface, SETTINGS); look at the second.
    for _ in 0..2 {
        client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health check");
    }

    let writes = writes.lock().expect("writes").clone();
    let request = 3; // the second request's stream id
    let carrying = |kind: u8| {
        writes
            .iter()
            .position(|write| frames(write).contains(&(kind, request)))
    };
    let headers = carrying(HEADERS).expect("the second request's HEADERS frame was written");
    let data = carrying(DATA).expect("the second request's DATA frame was written");
    assert_eq!(
        headers,
        data,
        "HEADERS and DATA of one unary request in different writes: {:?}",
        writes.iter().map(|w| frames(w)).collect::<Vec<_>>()
    );
    server.abort();
}

/// What the patch must not break: a request reset before the connection task wrote its
/// HEADERS (the stream was opened at send time, its HEADERS still queued) still sends
/// those HEADERS before the RST_STREAM. Dropping them would make the RST_STREAM the first
/// frame of an idle stream, which the peer must treat as a connection error (RFC 9113
/// §5.1, §6.4): every other call on the connection would fail.
#[tokio::test]
async fn a_request_reset_before_its_headers_are_written_keeps_the_connection() {
    tokio::time::timeout(std::time::Duration::from_secs(60), reset_before_headers())
        .await
        .expect("the exchange ended within 60 s");
}

async fn reset_before_headers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    // Answers every request it accepts; ends with the connection's error, if any.
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.expect("accept");
        let mut connection = h2::server::handshake(socket).await?;
        while let Some(accepted) = connection.accept().await {
            let (_request, mut respond) = accepted?;
            // A stream the client reset refuses the response: not the connection's error.
            let _ = respond.send_response(http::Response::new(()), true);
        }
        Ok::<_, h2::Error>(())
    });

    let socket = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(socket).await.expect("handshake");
    let mut client = client.ready().await.expect("ready");
    let request = || {
        http::Request::post(format!("http://{addr}/"))
            .body(())
            .expect("request")
    };
    // The connection task is not running yet, so nothing of this request is written
    // when it is reset.
    let (cancelled, mut body) = client.send_request(request(), false).expect("send");
    body.send_reset(h2::Reason::CANCEL);
    let connection = tokio::spawn(connection);

    let mut client = client.ready().await.expect("ready after the reset");
    let (response, _) = client.send_request(request(), true).expect("send");
    let response = response.await.expect("the next request on the connection");
    assert_eq!(response.status(), http::StatusCode::OK);
    assert!(
        cancelled.await.is_err(),
        "the reset request has no response"
    );

    // Without handles and streams, the client closes the connection.
    drop((client, response, body));
    connection
        .await
        .expect("connection task")
        .expect("the client's connection ended without an error");
    server
        .await
        .expect("server task")
        .expect("the server saw no connection error");
}
