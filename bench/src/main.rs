//! The `kvio-bench` binary (also run by `kvio bench`): see [`kvio_bench`].

use clap::Parser;

fn main() {
    std::process::exit(kvio_bench::run(kvio_bench::BenchCommand::parse()));
}
