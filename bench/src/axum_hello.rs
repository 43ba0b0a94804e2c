//! The floor of PiCloud's HTTP stack: a bare axum hello-world on the same
//! tokio + hyper versions, so `bench/run.sh` can print PiCloud/axum.
//!
//! Usage: `axum-hello 127.0.0.1:9101`

use axum::Router;
use axum::routing::get;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9101".to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = Router::new().route("/hello", get(|| async { "hello" }));
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("axum-hello listening on http://{addr}");
        axum::serve(listener, app).await
    })
}
