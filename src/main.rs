//! The `idempotent-request` binary: parse, run, map to an exit code.

use idempotent_request::client::input::cli::{self, Action};
use idempotent_request::client::pipeline;
use idempotent_request::client::report::{exit::Exit, log::Log};
use idempotent_request::shared::env::Env;
use std::process::ExitCode;

fn main() -> ExitCode {
    let env = Env::from_process();
    let github = env.is_true("GITHUB_ACTIONS");
    match cli::parse(std::env::args_os(), &env) {
        Ok(invocation) => {
            // `key` keeps stdout for the key alone, so that
            // `KEY=$(idempotent-request key …)` captures exactly it; the
            // runner reads workflow commands (masks) from stderr too.
            let mut log = if invocation.action == Action::Key {
                Log::to_stderr(github)
            } else {
                Log::for_process(github)
            };
            pipeline::run(invocation, &env, &mut log).into()
        }
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            Exit::Success.into()
        }
        Err(e) => {
            let mut log = Log::for_process(github);
            log.error("Invalid arguments", &cli::describe_error(&e));
            Exit::Usage.into()
        }
    }
}
