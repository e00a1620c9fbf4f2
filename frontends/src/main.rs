//! The `kvio` binary: see [`kvio::cli`].

fn main() -> std::process::ExitCode {
    kvio::cli::main()
}
