//! A unary gRPC request leaves the client in one write: its HEADERS frame and its DATA
//! frame together (the patched h2 in `vendor/h2`, see its PATCHED.md). Unpatched, the DATA
//! frame followed in a second write, so the server woke twice for every call (a Sell, a
//! CreateOrder).

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
