//! The tokio baseline: the kvio server a Rust user would write by default —
//! a task per connection on a tokio runtime (current-thread or
//! multi-thread), reading into a buffer and answering through the same
//! kvio-core connection, kvio-proto handler and store as the flavors, so
//! the only difference measured is the IO runtime. Bench-only code.

use std::io::{self, Write as _};
use std::net::SocketAddrV4;

use kvio_core::connection::DEFAULT_OUTPUT_LIMIT;
use kvio_core::store::{Limits, Slot};
use kvio_core::{Connection, Outcome, Shared, Store};
use kvio_proto::KeyValueHandler;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type HeapStore = Store<Box<[Slot]>, Box<[u8]>>;

/// Which tokio runtime serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Runtime {
    /// `new_current_thread`: one thread runs every task.
    Current,
    /// `new_multi_thread`: a worker per allowed CPU (or `--workers`), work stealing.
    Multi,
}

/// The tokio server's limits (the `kvio serve` defaults).
#[derive(Clone, Copy, Debug)]
pub struct TokioConfig {
    /// Runtime flavor.
    pub runtime: Runtime,
    /// Worker threads of the multi-thread runtime (`None`: one per allowed CPU).
    pub workers: Option<usize>,
    /// Longest frame accepted.
    pub max_frame_len: u32,
    /// Store entries.
    pub store_entries: usize,
    /// Store byte budget.
    pub store_bytes: usize,
}

/// Serves until killed; prints `kvio bench tokio-server: runtime=... addr=<ip:port>`.
pub fn serve(addr: SocketAddrV4, cfg: TokioConfig) -> io::Result<()> {
    let listener = std::net::TcpListener::bind(addr)?;
    let mut stdout = io::stdout();
    writeln!(stdout, "kvio bench tokio-server: runtime={:?} addr={}", cfg.runtime, listener.local_addr()?)?;
    stdout.flush()?;
    serve_listener(listener, cfg)
}

/// Serves `listener` forever.
pub fn serve_listener(listener: std::net::TcpListener, cfg: TokioConfig) -> io::Result<()> {
    let runtime = match cfg.runtime {
        Runtime::Current => tokio::runtime::Builder::new_current_thread().enable_io().build()?,
        Runtime::Multi => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = cfg.workers {
                builder.worker_threads(n.max(1));
            }
            builder.enable_io().build()?
        }
    };
    let store = Store::with_storage(
        vec![Slot::EMPTY; cfg.store_entries].into_boxed_slice(),
        vec![0u8; cfg.store_bytes].into_boxed_slice(),
        Limits::for_frame(cfg.max_frame_len, cfg.store_entries, cfg.store_bytes),
    );
    // Every task shares the store for the life of the process.
    let store: &'static Shared<HeapStore> = Box::leak(Box::new(Shared::new(store)));
    runtime.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("kvio bench tokio-server: accept: {e}");
                    continue;
                }
            };
            tokio::spawn(async move {
                if let Err(e) = serve_connection(stream, store, cfg.max_frame_len).await {
                    eprintln!("kvio bench tokio-server: connection: {e}");
                }
            });
        }
    })
}

async fn serve_connection(mut stream: TcpStream, store: &'static Shared<HeapStore>, max: u32) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut conn = Connection::new(max, DEFAULT_OUTPUT_LIMIT);
    let mut handler = KeyValueHandler::new(store);
    let mut input = vec![0u8; 16 * 1024];
    let mut payload = Vec::new();
    let mut out = Vec::new();
    loop {
        let n = stream.read(&mut input).await?;
        if n == 0 {
            return Ok(());
        }
        let mut taken = 0;
        loop {
            let r = conn.receive(&input[taken..n], 0, &mut payload, &mut handler, &mut out);
            taken += r.consumed;
            stream.write_all(&out).await?;
            out.clear();
            match r.outcome {
                Outcome::NeedMore => break,
                Outcome::Backpressure => continue,
                Outcome::Close(_) | Outcome::Quit | Outcome::OutputFull => return Ok(()),
            }
        }
    }
}
