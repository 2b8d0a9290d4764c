//! With the store gone, an authentic delivery is answered 503, never a 200 it cannot keep.

use std::sync::Arc;
use std::time::Duration;

use hoist::config::{Config, SystemSecrets};
use hoist::store::Store;
use hoist::webhook::Receiver;
use hoist::webhook::writer::Writer;

#[tokio::test]
async fn store_unavailable_answers_503() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("token");
    std::fs::write(&secret_file, "tok-store-down-test\n").expect("write token");
    let text = format!(
        "[gitlab]\nurl = \"http://127.0.0.1:9\"\ntoken = \"file:{f}\"\n[[projects]]\npath = \"acme/shop\"\nwebhook_token = \"file:{f}\"\n",
        f = secret_file.display()
    );
    let config = Arc::new(
        Config::parse(std::path::Path::new("t.toml"), &text, &SystemSecrets).expect("config"),
    );
    let token = "tok-store-down-test";
    let store = Store::open(&format!("sqlite://{}", dir.path().join("h.db").display()))
        .await
        .expect("store");
    let (writer, _task) = Writer::spawn(store.clone(), Arc::new(tokio::sync::Notify::new()));
    let state = Arc::new(hoist::http::AppState {
        config: config.clone(),
        store: store.clone(),
        docker: None,
        engine: None,
    });
    let app = hoist::http::router(state, Arc::new(Receiver::new(config, writer)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let post = || {
        client
            .post(format!("http://{addr}/hooks/gitlab"))
            .header("X-Gitlab-Event", "Tag Push Hook")
            .header("X-Gitlab-Token", token)
            .body(r#"{"object_kind":"tag_push","project":{"id":1,"path_with_namespace":"acme/shop"}}"#)
            .send()
    };
    assert_eq!(post().await.expect("post").status().as_u16(), 200);
    store.close().await;
    let resp = post().await.expect("post");
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.text().await.unwrap_or_default(), "store unavailable\n");
    let ready = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status().as_u16(), 503);
}
