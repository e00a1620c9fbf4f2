//! The several-servers client against real kvio servers: keys spread
//! evenly, a new server takes about 1/N of them, and a get always goes where
//! its put went.

include!("support/server.rs");

use std::time::Duration;

use kvio_client::{Client, Rendezvous, Reply, ShardedClient};

const KEYS: usize = 30_000;
const TIMEOUT: Duration = Duration::from_secs(10);

fn key(i: usize) -> String {
    format!("user:{i}")
}

/// Which of `servers` hold each key, asked of every server directly (one pipeline each).
fn holders(servers: &[String], keys: usize) -> Vec<Vec<usize>> {
    let mut held = vec![Vec::new(); keys];
    for (s, addr) in servers.iter().enumerate() {
        let mut client = Client::connect(addr.as_str(), TIMEOUT).unwrap();
        let mut pipeline = client.pipeline();
        for i in 0..keys {
            pipeline.get(&key(i));
        }
        for (i, reply) in pipeline.run().unwrap().into_iter().enumerate() {
            match reply {
                Reply::Found(value) => {
                    assert_eq!(value, format!("value of {}", key(i)));
                    held[i].push(s);
                }
                Reply::NotFound => {}
                other => panic!("{other:?}"),
            }
        }
    }
    held
}

#[test]
fn keys_spread_evenly_move_little_and_are_found_where_they_were_put() {
    let running: Vec<TestServer> = (0..4).map(|_| TestServer::start()).collect();
    let addrs: Vec<String> = running.iter().map(|s| s.addr().to_string()).collect();
    let three = &addrs[..3];

    // Put every key through the sharded client, over the first three servers.
    let mut sharded = ShardedClient::new(three, TIMEOUT);
    for i in 0..KEYS {
        sharded.put(&key(i), &format!("value of {}", key(i))).unwrap();
    }

    // Each key is on exactly one server, the one the placement names.
    let held = holders(three, KEYS);
    let mut per_server = [0usize; 3];
    for (i, servers) in held.iter().enumerate() {
        assert_eq!(servers.len(), 1, "{} is on {servers:?}", key(i));
        assert_eq!(three[servers[0]], sharded.server_for(&key(i)), "{}", key(i));
        per_server[servers[0]] += 1;
    }
    eprintln!("keys per server: {per_server:?} (even: {})", KEYS / 3);
    // Within ±10 % of an even spread.
    let even = KEYS / 3;
    for (s, &n) in per_server.iter().enumerate() {
        assert!(n.abs_diff(even) * 10 <= even, "server {s} holds {n} keys of {KEYS} (even: {even}): {per_server:?}");
    }
    // A get goes where its put went.
    for i in (0..KEYS).step_by(7) {
        assert_eq!(sharded.get(&key(i)).unwrap(), Some(format!("value of {}", key(i))));
    }

    // A fourth server: at most 30 % of the keys move, and only to it.
    let four = Rendezvous::new(addrs.iter().cloned());
    let placed_on_three = Rendezvous::new(three.iter().cloned());
    let mut moved = 0;
    for i in 0..KEYS {
        let (before, after) = (placed_on_three.server_for(&key(i)), four.server_for(&key(i)));
        if before != after {
            assert_eq!(after, 3, "{} moved between old servers", key(i));
            moved += 1;
        }
    }
    eprintln!("keys moved to a 4th server: {moved} of {KEYS}");
    assert!(moved * 10 <= KEYS * 3, "{moved} of {KEYS} keys moved");
    assert!(moved * 100 >= KEYS * 15, "{moved} of {KEYS} keys moved: the new server takes too few");

    // With four servers, keys that did not move are still found; moved keys
    // are misses until written again (kvio copies nothing between servers),
    // and a put lands on the new server.
    let mut sharded = ShardedClient::new(&addrs, TIMEOUT);
    for i in (0..KEYS).step_by(7) {
        let k = key(i);
        let got = sharded.get(&k).unwrap();
        if four.server_for(&k) == 3 {
            assert_eq!(got, None, "{k}");
            sharded.put(&k, &format!("value of {k}")).unwrap();
            assert_eq!(sharded.get(&k).unwrap(), Some(format!("value of {k}")));
        } else {
            assert_eq!(got, Some(format!("value of {k}")), "{k}");
        }
    }
    let on_fourth = holders(&addrs[3..], KEYS).iter().filter(|h| !h.is_empty()).count();
    assert_eq!(on_fourth, (0..KEYS).step_by(7).filter(|&i| four.server_for(&key(i)) == 3).count());
}

#[test]
fn a_server_down_fails_only_its_own_keys() {
    let up = TestServer::start();
    // A port nothing listens on: bound, then closed.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let addrs = [up.addr().to_string(), down.to_string()];
    let mut sharded = ShardedClient::new(&addrs, Duration::from_secs(2));
    let (mut ok, mut failed) = (0, 0);
    for i in 0..200 {
        let k = key(i);
        match sharded.put(&k, "v") {
            Ok(()) => {
                assert_eq!(sharded.server_for(&k), addrs[0]);
                ok += 1;
            }
            Err(e) => {
                assert_eq!(sharded.server_for(&k), addrs[1]);
                assert_eq!(e.addr(), addrs[1], "{e}");
                assert!(e.to_string().contains(&addrs[1]), "{e}");
                failed += 1;
            }
        }
    }
    assert!(ok > 0 && failed > 0, "{ok} stored, {failed} failed");
}
