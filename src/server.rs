//! Serving HTTP: the ingress and the partner mocks bind and serve the same way.

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Binds `addr`, with a message that says what to do when the port is taken.
pub async fn bind(addr: SocketAddr, what: &str, variable: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|err| {
        anyhow::anyhow!(
            "{what} cannot listen on {addr} ({err}): stop whatever uses the port, or set {variable}"
        )
    })
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await?;
    Ok(())
}

/// `http://<addr>` of a bound listener.
pub fn url_of(listener: &TcpListener) -> String {
    format!(
        "http://{}",
        listener
            .local_addr()
            .expect("a bound listener has an address")
    )
}
