//! The server does not link the benchmark: `kvio`'s normal dependency tree
//! (what `cargo build -p kvio` compiles) holds none of the lab's crates.

use std::process::Command;

#[test]
fn the_server_links_no_benchmark_crate() {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "-p", "kvio", "-e", "normal", "--prefix", "none", "--locked", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(tree.lines().any(|l| l.starts_with("kvio-core ")), "a tree of kvio: {tree}");
    for crate_name in ["kvio-bench", "tokio", "plotters", "hdrhistogram", "indicatif"] {
        assert!(!tree.lines().any(|l| l.starts_with(&format!("{crate_name} "))), "kvio links {crate_name}:\n{tree}");
    }
}
