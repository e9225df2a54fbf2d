//! What the daemon binaries share around their own arguments and work: logging, clap's errors
//! under the daemon's name, and the error chain on exit.

use std::process::ExitCode;

use clap::Parser;

/// One line: an error and each of its causes, `: `-separated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Logs at `warn` unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
}

/// A daemon's `main`: parses `A` (a usage error exits with 2, `--help` and `--version` with
/// success), runs `run` and prints its error chain as `NAME: error: ...` (exit 1).
pub fn main<A, E>(name: &str, run: impl FnOnce(A) -> Result<(), E>) -> ExitCode
where
    A: Parser,
    E: std::error::Error,
{
    init_logging();
    let args = match A::try_parse() {
        Ok(args) => args,
        Err(e) if e.use_stderr() => {
            let msg = e.to_string();
            let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
            eprint!("{name}: error: {msg}");
            return ExitCode::from(2);
        }
        Err(e) => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("serving failed")]
        Serve(#[source] std::io::Error),
    }

    #[test]
    fn error_chain_joins_each_cause() {
        let e = Outer::Serve(std::io::Error::other("socket gone"));
        assert_eq!(super::error_chain(&e), "serving failed: socket gone");
    }
}
