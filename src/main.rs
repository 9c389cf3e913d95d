//! The `idempotent-request` binary: parse, run, map to an exit code.

use idempotent_request::client::input::cli;
use idempotent_request::client::pipeline as app;
use idempotent_request::client::report::{exit::Exit, log::Log};
use idempotent_request::shared::env::Env;
use std::process::ExitCode;

fn main() -> ExitCode {
    let env = Env::from_process();
    let mut log = Log::for_process(env.is_true("GITHUB_ACTIONS"));
    match cli::parse(std::env::args_os(), &env) {
        Ok(invocation) => app::run(invocation, &env, &mut log).into(),
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            Exit::Success.into()
        }
        Err(e) => {
            if log.is_github() {
                log.error("Invalid arguments", e.render().to_string().trim());
            } else {
                let _ = e.print();
            }
            Exit::Usage.into()
        }
    }
}
