//! A loopback HTTP server for the benchmarks: answers every request with
//! `201` and a small JSON body. Prints its URL, then serves until killed.
//! `cargo run --release --example loopback_server`

#[path = "../tests/support/mod.rs"]
mod support;

use support::{Reply, Response, Server};

fn main() {
    let server = Server::start(|_| {
        Reply::Respond(
            Response::new(201)
                .header("content-type", "application/json")
                .body(r#"{"id":1}"#),
        )
    });
    println!("{}", server.url("/"));
    loop {
        std::thread::park();
    }
}
