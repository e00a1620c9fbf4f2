//! A raw client for the line-based protocols, RESP2 and memcached: bytes
//! out, lines, counted blocks and RESP replies in, every read and write
//! under [`IO_TIMEOUT`]. Its RESP reply reader is written here from the
//! Redis protocol specification, not taken from the core, so the tests
//! check the server's replies against an independent reading.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::{self, JoinHandle};

use super::IO_TIMEOUT;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+text`.
    Simple(String),
    /// `-text`.
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$n` and its bytes.
    Bulk(Vec<u8>),
    /// `$-1`.
    Nil,
    /// `*n` and its replies.
    Array(Vec<Reply>),
    /// `*-1`.
    NilArray,
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple("OK".to_owned())
    }

    /// A simple string.
    pub fn simple(text: &str) -> Reply {
        Reply::Simple(text.to_owned())
    }

    /// An error reply (the text after `-`).
    pub fn error(text: &str) -> Reply {
        Reply::Error(text.to_owned())
    }

    /// A bulk string.
    pub fn bulk(bytes: impl AsRef<[u8]>) -> Reply {
        Reply::Bulk(bytes.as_ref().to_vec())
    }

    /// An array of bulk strings and nils.
    pub fn bulks(items: &[Option<&[u8]>]) -> Reply {
        Reply::Array(items.iter().map(|i| i.map_or(Reply::Nil, Reply::bulk)).collect())
    }
}

/// `*<n>\r\n$<len>\r\n<arg>\r\n...`: a command as every Redis client sends it.
pub fn multibulk(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A test connection to a RESP or memcached listener.
#[derive(Debug)]
pub struct TextClient {
    pub stream: TcpStream,
    input: Vec<u8>,
    at: usize,
}

impl TextClient {
    pub fn connect(addr: SocketAddr) -> TextClient {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        TextClient { stream, input: Vec::new(), at: 0 }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("send {} bytes: {e}", bytes.len()));
    }

    /// Writes `bytes` from a thread of its own, so that a test can read the
    /// answers while a long pipeline is still being written (no deadlock on
    /// full socket buffers). The thread's result says whether all went out.
    pub fn send_in_background(&self, bytes: Vec<u8>) -> JoinHandle<std::io::Result<()>> {
        let mut stream = self.stream.try_clone().expect("clone the socket");
        thread::spawn(move || stream.write_all(&bytes))
    }

    /// Reads more bytes; false when the server closed (FIN or reset).
    fn fill(&mut self) -> bool {
        if self.at == self.input.len() {
            self.input.clear();
            self.at = 0;
        }
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {
                    return false;
                }
                Err(e) => panic!("reading an answer: {e} (unread: {:?})", self.unread()),
            }
        }
    }

    fn unread(&self) -> String {
        String::from_utf8_lossy(&self.input[self.at..]).into_owned()
    }

    /// The next line without its `\r\n`, or `None` if the server closed first.
    pub fn try_line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = self.input[self.at..].windows(2).position(|w| w == b"\r\n") {
                let line = self.input[self.at..self.at + end].to_vec();
                self.at += end + 2;
                return Some(line);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// The next line, as text.
    pub fn line(&mut self) -> String {
        let line = self.try_line().expect("the connection closed while a line was expected");
        String::from_utf8(line).expect("a UTF-8 line")
    }

    /// The next `n` bytes and the `\r\n` after them.
    pub fn block(&mut self, n: usize) -> Vec<u8> {
        while self.input.len() - self.at < n + 2 {
            assert!(self.fill(), "the connection closed in a block of {n} bytes");
        }
        let block = self.input[self.at..self.at + n].to_vec();
        assert_eq!(&self.input[self.at + n..self.at + n + 2], b"\r\n", "a block ends with \\r\\n");
        self.at += n + 2;
        block
    }

    /// The next RESP reply, or `None` if the server closed before one began.
    pub fn try_reply(&mut self) -> Option<Reply> {
        let line = self.try_line()?;
        Some(self.reply_from(line))
    }

    /// The next RESP reply.
    pub fn reply(&mut self) -> Reply {
        self.try_reply().expect("the connection closed while a reply was expected")
    }

    fn reply_from(&mut self, line: Vec<u8>) -> Reply {
        let (&kind, rest) = line.split_first().expect("an empty reply line");
        let text = String::from_utf8(rest.to_vec()).expect("a reply line is text");
        let number = || text.parse::<i64>().unwrap_or_else(|_| panic!("not a number: {text:?}"));
        match kind {
            b'+' => Reply::Simple(text),
            b'-' => Reply::Error(text),
            b':' => Reply::Integer(number()),
            b'$' if number() == -1 => Reply::Nil,
            b'$' => Reply::Bulk(self.block(usize::try_from(number()).expect("a bulk length"))),
            b'*' if number() == -1 => Reply::NilArray,
            b'*' => Reply::Array((0..number()).map(|_| self.reply()).collect()),
            _ => panic!("not a RESP reply: {:?}", String::from_utf8_lossy(&line)),
        }
    }

    /// Sends one command (multibulk) and reads its reply.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Reply {
        self.send(&multibulk(args));
        self.reply()
    }

    /// [`TextClient::cmd`] with the arguments as words of one string.
    pub fn cmd_words(&mut self, words: &str) -> Reply {
        let args: Vec<&[u8]> = words.split(' ').map(str::as_bytes).collect();
        self.cmd(&args)
    }

    /// Sends a memcached command line (`\r\n` added) and reads one line back.
    pub fn mc(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.line()
    }

    /// A memcached storage command: `<line>\r\n<data>\r\n`, and its answer line.
    pub fn mc_store(&mut self, line: &str, data: &[u8]) -> String {
        let mut request = format!("{line}\r\n").into_bytes();
        request.extend_from_slice(data);
        request.extend_from_slice(b"\r\n");
        self.send(&request);
        self.line()
    }

    /// `get <key>` over memcached: the flags and value if it is there.
    pub fn mc_get(&mut self, key: &str) -> Option<(u32, Vec<u8>)> {
        self.send(format!("get {key}\r\n").as_bytes());
        let line = self.line();
        if line == "END" {
            return None;
        }
        let fields: Vec<&str> = line.split(' ').collect();
        assert!(fields.len() == 4 && fields[0] == "VALUE" && fields[1] == key, "{line:?}");
        let flags = fields[2].parse().unwrap();
        let value = self.block(fields[3].parse().unwrap());
        assert_eq!(self.line(), "END");
        Some((flags, value))
    }

    /// Asserts the server closed the connection (FIN or reset) with nothing
    /// more to read.
    pub fn expect_close(&mut self) {
        assert_eq!(self.unread(), "", "unread answer bytes before the expected close");
        assert!(!self.fill(), "expected the server to close, got {:?}", self.unread());
    }

    /// True if the server closed within the socket's read timeout; false on
    /// a timeout. Panics if the server sends bytes.
    pub fn closed_by_server(&mut self) -> bool {
        assert_eq!(self.unread(), "", "unread answer bytes");
        let mut byte = [0u8; 1];
        loop {
            match self.stream.read(&mut byte) {
                Ok(0) => return true,
                Ok(_) => panic!("expected silence or a close, got bytes"),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {
                    return true;
                }
                Err(e) => panic!("reading: {e}"),
            }
        }
    }
}

/// The commands of a table of docs/redis-and-memcached.md (the section
/// whose heading starts with `heading`): the first word of each
/// backticked span of each row's first cell, but the argument spans
/// (`key flags ...`).
pub fn doc_table_commands(heading: &str) -> Vec<String> {
    let doc = include_str!("../../../docs/redis-and-memcached.md");
    let section = doc.split("\n## ").find(|s| s.starts_with(heading)).unwrap_or_else(|| panic!("no {heading}"));
    let mut names: Vec<String> = Vec::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cell = row[2..].split(" | ").next().unwrap();
        for span in cell.split('`').skip(1).step_by(2) {
            let word = span.split(' ').next().unwrap();
            if word != "key" && !names.iter().any(|n| n == word) {
                names.push(word.to_owned());
            }
        }
    }
    names
}
