//! kvio's benchmark lab (being built): `kvio bench` parses [`BenchCommand`]
//! and calls [`run`].
#![deny(missing_docs)]

/// `kvio bench` arguments.
#[derive(Debug, clap::Args)]
pub struct BenchCommand {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub addr: String,
}

/// Runs `kvio bench`; returns the process exit code.
pub fn run(_cmd: BenchCommand) -> i32 {
    eprintln!("kvio bench: not built yet");
    2
}
