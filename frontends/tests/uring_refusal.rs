//! Where the kernel refuses io_uring, `kvio serve --flavor uring` says so
//! and exits 2, before any start-up line. The refusal is made real with the
//! mechanism Docker's default profile uses: a seccomp filter in the child
//! that fails `io_uring_setup` with EPERM. The same filter leaves the epoll
//! flavor serving, so it is the io_uring refusal that is tested.

// No per_flavor! here: the refusal is the uring flavor's alone.
#[allow(unused_macros)]
mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// `io_uring_setup`'s number in Linux's generic syscall table (every architecture).
const SYS_IO_URING_SETUP: u32 = 425;

/// Makes every later `io_uring_setup` of this process (and what it execs) fail with EPERM.
fn refuse_io_uring() -> std::io::Result<()> {
    let filter = [
        // A = seccomp_data.nr
        libc::sock_filter { code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, jt: 0, jf: 0, k: 0 },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: SYS_IO_URING_SETUP,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW },
    ];
    let program = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
    // SAFETY: plain prctl calls; `program` and `filter` outlive them (the kernel copies the filter).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program as *const libc::sock_fprog) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn serve_without_io_uring(flavor: &str) -> std::process::Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvio"));
    command.args(["serve", "--flavor", flavor, "--addr", "127.0.0.1:0"]);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: between fork and exec the hook only makes two prctl calls,
    // which allocate nothing and take no lock.
    unsafe { command.pre_exec(refuse_io_uring) };
    command.spawn().expect("spawn kvio serve")
}

#[test]
fn uring_refused_by_seccomp_exits_2_naming_it_and_suggesting_epoll() {
    let mut child = serve_without_io_uring("uring");
    let exited = poll_until(PROCESS_TIMEOUT, Duration::from_millis(10), || child.try_wait().unwrap());
    let Some(status) = exited else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("kvio serve --flavor uring started where io_uring_setup is refused");
    };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(output.stdout.is_empty(), "no start-up line: {:?}", String::from_utf8_lossy(&output.stdout));
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].contains("io_uring_setup was refused") && lines[0].contains("EPERM"), "{stderr}");
    assert!(lines[0].ends_with("use --flavor epoll."), "{stderr}");
}

#[test]
fn the_same_filter_leaves_epoll_serving() {
    let mut child = serve_without_io_uring("epoll");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // The start-up line comes at once, or the read ends when the process exits.
    let read = stdout.read_line(&mut line);
    let _ = child.kill();
    let _ = child.wait();
    read.unwrap();
    assert!(line.starts_with("kvio serve: flavor=epoll "), "{line:?}");
}
