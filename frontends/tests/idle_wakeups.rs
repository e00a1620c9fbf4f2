//! An idle connection of the threaded flavor costs no wake-up: its thread
//! sleeps in `recv` until the client sends, the idle timeout runs out or the
//! server stops (which wakes it from outside). Checked on the threads' own
//! context-switch counters in `/proc/PID/task/TID/status`, which do not move
//! while a thread sleeps; a thread that polled a 100 ms read timeout would
//! switch at least 5 times in the window.

// Only the threaded flavor has a thread per connection: no per_flavor! here.
#[allow(unused_macros)]
mod common;

use std::time::Duration;

use common::*;

/// Voluntary + involuntary context switches of every connection thread, by
/// thread id, if every one of them is asleep (state `S`).
fn sleeping_connection_threads(pid: u32) -> Option<Vec<(String, u64)>> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(task.join("comm")) else { continue };
        if comm.trim() != "kvio-connection" {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(task.join("status")) else { continue };
        if !status.lines().any(|l| l.starts_with("State:") && l.contains("S (sleeping)")) {
            return None;
        }
        let switches = status
            .lines()
            .filter(|l| l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches"))
            .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
            .sum();
        threads.push((task.file_name().unwrap().to_string_lossy().into_owned(), switches));
    }
    threads.sort();
    Some(threads)
}

#[test]
fn idle_threaded_connections_never_wake_up_and_a_stop_still_ends_them() {
    let mut server = Server::start(Flavor::Threaded, &[]);
    let mut clients: Vec<Client> = (0..3).map(|_| server.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.put_ok(&format!("k{i}"), "v");
        assert_eq!(client.get(&format!("k{i}")).as_deref(), Some("v"));
    }
    // Answered, so each thread is back in (or on its way to) recv: wait until
    // all three are seen asleep twice with the same counts.
    let mut last = None;
    let before = poll_until(IO_TIMEOUT, Duration::from_millis(20), || {
        let now = sleeping_connection_threads(server.pid()).filter(|t| t.len() == 3);
        let settled = now.is_some() && now == last;
        last = now;
        if settled { last.clone() } else { None }
    })
    .expect("three connection threads asleep");
    // Absence of wake-ups can only be observed over a window.
    std::thread::sleep(Duration::from_millis(600));
    let after = sleeping_connection_threads(server.pid());
    assert_eq!(Some(before), after, "an idle connection thread woke up (thread, context switches)");

    server.signal_term();
    for client in &mut clients {
        assert!(client.closed_by_server(), "idle connection not closed on shutdown");
    }
    let exit = server.wait_exit();
    assert_eq!(exit.status.code(), Some(0), "{exit:?}");
    assert_eq!(exit.stopped_counts(), [3, 6, 0], "{exit:?}");
}
