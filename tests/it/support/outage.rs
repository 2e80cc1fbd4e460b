//! Dependencies a test can take away and give back: a NATS server of its own, and a TCP proxy
//! in front of Postgres that it can cut. Both on loopback.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ihub::chaos::rig::Nats;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::eventually;

/// A free port on 127.0.0.1 (bound and released: the caller binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `nats-server -js` on a port and store of its own, killed with SIGKILL and restarted on the
/// same port and store as an operator's outage would (the server `ihub chaos` runs).
pub struct NatsServer {
    nats: Nats,
    _dir: tempdir::Dir,
}

impl NatsServer {
    pub async fn start() -> NatsServer {
        let dir = tempdir::Dir::new("nats");
        std::fs::create_dir_all(dir.path.join("logs")).expect("a log directory");
        let bin = Nats::find(None).expect("nats-server");
        let mut nats = Nats::new(&bin, &dir.path).expect("a NATS server");
        nats.restart().await.expect("nats-server starts");
        NatsServer { nats, _dir: dir }
    }

    pub fn url(&self) -> String {
        self.nats.url()
    }

    /// Starts the server again on its port and store; returns once it answers.
    pub async fn restart(&mut self) {
        self.nats.restart().await.expect("nats-server restarts");
    }

    /// SIGKILL.
    pub async fn kill(&mut self) {
        self.nats.kill();
    }
}

/// A TCP proxy on a port of its own to `target`. [`Proxy::cut`] closes the port and every
/// connection through it (what a database going away looks like to its clients);
/// [`Proxy::restore`] opens the same port again. It runs on a runtime of its own, so that it
/// keeps forwarding while a test's runtime is blocked (a hub's cleanup drops its database
/// through it).
pub struct Proxy {
    pub addr: SocketAddr,
    target: SocketAddr,
    open: Arc<Mutex<CancellationToken>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    pub async fn start(target: &str) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the proxy's runtime");
        let proxy = Proxy {
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            target: target.parse().expect("a socket address"),
            open: Arc::new(Mutex::new(CancellationToken::new())),
            runtime: Some(runtime),
        };
        proxy.restore().await;
        proxy
    }

    pub fn cut(&self) {
        self.open.lock().expect("proxy lock").cancel();
    }

    /// Opens the port again; returns once it accepts.
    pub async fn restore(&self) {
        let open = CancellationToken::new();
        *self.open.lock().expect("proxy lock") = open.clone();
        let (addr, target) = (self.addr, self.target);
        let (bound, listening) = tokio::sync::oneshot::channel();
        self.runtime.as_ref().expect("running").spawn(async move {
            let listener = eventually(
                "the proxy port to be free again",
                Duration::from_secs(10),
                || async move { TcpListener::bind(addr).await.ok() },
            )
            .await;
            let _ = bound.send(());
            loop {
                let (mut inbound, _) = tokio::select! {
                    _ = open.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => continue,
                    },
                };
                let open = open.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = open.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        listening.await.expect("the proxy listens");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A directory removed on drop.
mod tempdir {
    use std::path::PathBuf;

    pub struct Dir {
        pub path: PathBuf,
    }

    impl Dir {
        pub fn new(what: &str) -> Dir {
            let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("{what}-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&path).expect("a temporary directory");
            Dir { path }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
