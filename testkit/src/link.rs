//! A TCP link that can go silent, for tests: a relay from a local port to a target (say
//! MySQL) whose forwarding can be cut and healed. A cut is a partition, not a reset:
//! nothing is closed, bytes stop moving both ways, and what was in flight arrives after
//! the heal (as TCP's retransmissions deliver it). A connection opened during a cut is
//! accepted by the kernel but hears nothing (no server greeting) until the heal.
//!
//! `devstack chaos --partitions` cuts the real links with nftables; this is the same
//! fault inside one test process, where no root is needed.

use std::{io, net::SocketAddr};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

pub struct Link {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Link {
    /// Listens on 127.0.0.1 (a free port) and relays every connection to `target`.
    pub async fn start(target: SocketAddr) -> io::Result<Link> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, _) = watch::channel(false);
        let link_cut = cut.clone();
        let accept = tokio::spawn(async move {
            let mut relays = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                relays.spawn(relay(client, target, link_cut.subscribe()));
            }
        });
        Ok(Link { addr, cut, accept })
    }

    /// A link in front of the MySQL server `db` points at, and `db`'s options pointed
    /// through it (same database and user, the link's address).
    pub async fn to_mysql(
        db: &sqlx::mysql::MySqlConnectOptions,
    ) -> io::Result<(Link, sqlx::mysql::MySqlConnectOptions)> {
        let target = SocketAddr::from(([127, 0, 0, 1], db.get_port()));
        let link = Self::start(target).await?;
        let through = db.clone().host("127.0.0.1").port(link.addr.port());
        Ok((link, through))
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops every byte, both ways, on every connection, old and new.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Lets bytes move again; what was held is delivered.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Link {
    /// Closes the listener and every relayed connection (the relays belong to the
    /// accepting task's set).
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(client: TcpStream, target: SocketAddr, cut: watch::Receiver<bool>) {
    if !flowing(&mut cut.clone()).await {
        return;
    }
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Either direction ending (a close or an error) ends both.
    tokio::select! {
        () = pump(client_read, server_write, cut.clone()) => {}
        () = pump(server_read, client_write, cut) => {}
    }
}

/// Waits while the link is cut; false once the link itself is gone.
async fn flowing(cut: &mut watch::Receiver<bool>) -> bool {
    cut.wait_for(|cut| !*cut).await.is_ok()
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !flowing(&mut cut).await {
            return;
        }
        // A cut that starts while we read holds the bytes until the heal.
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !flowing(&mut cut).await {
            return;
        }
        let Some(chunk) = buf.get(..n) else { return };
        if to.write_all(chunk).await.is_err() {
            return;
        }
    }
}
