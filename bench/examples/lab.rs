//! `kvio bench` without the servers: the same command line (`lab bench
//! ...`), so the baselines and the load generator can be run and compared
//! on their own (`cargo run --release -p kvio-bench --example lab -- bench
//! compare --servers floor,tokio-current`). Flavors need the `kvio` binary.

use clap::Parser;

#[derive(Debug, Parser)]
enum Lab {
    /// `kvio bench`.
    Bench(kvio_bench::BenchCommand),
}

fn main() {
    let Lab::Bench(cmd) = Lab::parse();
    std::process::exit(kvio_bench::run(cmd));
}
