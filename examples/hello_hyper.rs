//! A bare hyper hello-world on 127.0.0.1 for the gateway benchmark: the
//! baseline the replay path is compared with, and a fast upstream for the
//! forward path. Answers every request `201 {"id":1}`, or with
//! `HELLO_BODY_BYTES=N` a JSON object of N bytes (`{"id":1,"pad":"xx…"}`,
//! for answers of a realistic size). Prints its URL.
//! `cargo run --release --example hello_hyper`

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

/// The answer's body: `{"id":1}`, padded to `HELLO_BODY_BYTES` bytes.
fn body() -> bytes::Bytes {
    const PLAIN: &str = "{\"id\":1}";
    /// The padded answer without its padding.
    const FRAME: usize = "{\"id\":1,\"pad\":\"\"}".len();
    let padded = std::env::var("HELLO_BODY_BYTES")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > FRAME);
    match padded {
        Some(n) => format!("{{\"id\":1,\"pad\":\"{}\"}}", "x".repeat(n - FRAME)).into(),
        None => PLAIN.into(),
    }
}

#[tokio::main]
async fn main() {
    let body = body();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    println!("http://{}/", listener.local_addr().expect("an address"));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_: Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(201)
                            .header("content-type", "application/json")
                            .body(http_body_util::Full::new(body))
                            .expect("a response"),
                    )
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
