//! A loopback HTTP server for benchmarks and the action's end-to-end test.
//! Prints its URL, then serves until killed.
//!
//! - `cargo run --release --example loopback_server`: answers every request
//!   with `201` and a small JSON body (the benchmark target).
//! - `… -- idempotent`: an idempotent API that performs each key's operation
//!   once, loses the first response of each key (drops the connection after
//!   committing), and replays stored responses with `Idempotent-Replayed`.
//!   `GET /effects` answers how many operations it performed, so an
//!   end-to-end test can check there was exactly one.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use support::{AfterCommit, Reply, Response, Server, Toy};

fn main() {
    let server = match std::env::args().nth(1).as_deref() {
        Some("idempotent") => {
            let toy = Arc::new(Toy::default());
            let handler = toy.handler(AfterCommit::Drop);
            Server::start(move |request| {
                if request.method == "GET" && request.path == "/effects" {
                    Reply::Respond(Response::new(200).body(toy.effects().to_string()))
                } else {
                    handler(request)
                }
            })
        }
        None => Server::start(|_| {
            Reply::Respond(
                Response::new(201)
                    .header("content-type", "application/json")
                    .body(r#"{"id":1}"#),
            )
        }),
        Some(other) => {
            eprintln!("unknown mode `{other}`; use no argument or `idempotent`");
            std::process::exit(2);
        }
    };
    println!("{}", server.url("/"));
    loop {
        std::thread::park();
    }
}
