//! The baseline for `scripts/bench-intake`: a bare axum handler that reads the body and answers 200.

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".to_string());
    let app = Router::new().route(
        "/hooks/gitlab",
        post(|body: Bytes| async move {
            std::hint::black_box(body.len());
            "ok"
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await
}
