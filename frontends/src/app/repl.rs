//! What one line of `kvio cli` means: words split as a POSIX shell splits
//! them (`shell-words`: quotes and backslashes), blank lines and `#`
//! comments skipped, commands in any case, and the `help` text; and where
//! the lines come from ([`Input`]): a terminal through rustyline (line
//! editing, history), anything else line by line as it is. The
//! connection, the answers and the exit status are [`crate::cli`]'s.

use std::io::{self, BufRead, IsTerminal};
use std::path::PathBuf;

use rustyline::error::ReadlineError;

/// One line of `kvio cli` input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// Nothing to do: blank, or a comment.
    Blank,
    /// `help`: print [`HELP`].
    Help,
    /// `get KEY`.
    Get(String),
    /// `put KEY VALUE`.
    Put(String, String),
    /// `del KEY`.
    Del(String),
    /// `quit` or `exit`: leave, as at the end of the input.
    Quit,
    /// Not a command; the reason, a whole sentence.
    Invalid(String),
}

/// What `help` prints.
pub(crate) const HELP: &str = "\
get KEY          print the value stored under KEY, or (nil)
put KEY VALUE    store VALUE under KEY; prints OK, or ERR and the reason
del KEY          delete KEY; prints OK, or (nil) if it was not there
help             this list
quit, exit       leave (so does Ctrl-D)
Quote words with spaces as in a shell: put \"a key\" 'a value'. Lines starting with # are skipped.";

/// The commands, for an unknown one's error.
const USAGE: &str = "expected get KEY, put KEY VALUE, del KEY, help or quit.";

/// Reads one line (without its newline).
pub(crate) fn parse_line(line: &str) -> Line {
    if line.trim_start().starts_with('#') {
        return Line::Blank;
    }
    let words = match shell_words::split(line) {
        Ok(words) => words,
        Err(_) => return Line::Invalid("the line has an unclosed quote.".into()),
    };
    let mut words = words.into_iter();
    let Some(command) = words.next() else { return Line::Blank };
    let rest: Vec<String> = words.collect();
    match command.to_ascii_lowercase().as_str() {
        "help" if rest.is_empty() => Line::Help,
        "help" => Line::Invalid("help takes no arguments.".into()),
        "quit" | "exit" if rest.is_empty() => Line::Quit,
        "quit" | "exit" => Line::Invalid(format!("{} takes no arguments.", command.to_ascii_lowercase())),
        "get" => match <[String; 1]>::try_from(rest) {
            Ok([key]) => Line::Get(key),
            Err(rest) => Line::Invalid(wrong_count("get", "KEY", 1, rest.len())),
        },
        "put" => match <[String; 2]>::try_from(rest) {
            Ok([key, value]) => Line::Put(key, value),
            Err(rest) => Line::Invalid(wrong_count("put", "KEY VALUE", 2, rest.len())),
        },
        "del" => match <[String; 1]>::try_from(rest) {
            Ok([key]) => Line::Del(key),
            Err(rest) => Line::Invalid(wrong_count("del", "KEY", 1, rest.len())),
        },
        _ => Line::Invalid(format!("unknown command {}: {USAGE}", crate::cli::shorten(&command))),
    }
}

/// Where `kvio cli` reads its lines: a terminal is edited with rustyline
/// (arrows, Ctrl-R, history kept in `~/.kvio_history`, as redis-cli keeps
/// `~/.rediscli_history`); a pipe or a file is read line by line, bytes
/// as they are, so that a line that is not UTF-8 is an error of its own.
pub(crate) enum Input {
    Terminal { editor: Box<rustyline::DefaultEditor>, prompt: String, history: Option<PathBuf> },
    Pipe(io::StdinLock<'static>),
}

/// Lines of history kept.
const HISTORY_LINES: usize = 1000;

impl Input {
    /// Reads stdin, through a line editor if it is a terminal, with
    /// `prompt`. Err: the terminal cannot be set up.
    pub(crate) fn open(prompt: String) -> Result<Input, String> {
        let stdin = io::stdin();
        if !stdin.is_terminal() {
            return Ok(Input::Pipe(stdin.lock()));
        }
        let config = rustyline::Config::builder()
            // Prompt and echo on the terminal even when stdout is a file.
            .behavior(rustyline::Behavior::PreferTerm)
            .auto_add_history(true)
            .max_history_size(HISTORY_LINES)
            .map_err(|e| format!("terminal: {e}"))?
            .build();
        let mut editor = rustyline::DefaultEditor::with_config(config).map_err(|e| format!("terminal: {e}"))?;
        let history =
            std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".kvio_history"));
        if let Some(path) = &history {
            // None yet, the first time.
            let _ = editor.load_history(path);
        }
        Ok(Input::Terminal { editor: Box::new(editor), prompt, history })
    }

    /// Whether a person is typing.
    pub(crate) fn is_terminal(&self) -> bool {
        matches!(self, Input::Terminal { .. })
    }

    /// The next line, `None` at the end of the input (Ctrl-D at a
    /// terminal). Ctrl-C drops the line being typed, as in a shell.
    pub(crate) fn next_line(&mut self, raw: &mut Vec<u8>) -> Result<Option<Line>, String> {
        match self {
            Input::Pipe(stdin) => {
                raw.clear();
                if stdin.read_until(b'\n', raw).map_err(|e| format!("stdin: {e}"))? == 0 {
                    return Ok(None);
                }
                let text = raw.strip_suffix(b"\n").unwrap_or(raw);
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                Ok(Some(match std::str::from_utf8(text) {
                    Ok(text) => parse_line(text),
                    Err(_) => Line::Invalid("the line is not valid UTF-8.".into()),
                }))
            }
            Input::Terminal { editor, prompt, .. } => loop {
                match editor.readline(prompt) {
                    Ok(text) => return Ok(Some(parse_line(&text))),
                    Err(ReadlineError::Interrupted) => continue,
                    Err(ReadlineError::Eof) => return Ok(None),
                    Err(e) => return Err(format!("terminal: {e}")),
                }
            },
        }
    }

    /// Keeps the history for next time (a terminal's; best effort: a home
    /// that cannot be written costs the history, not the session).
    pub(crate) fn close(self) {
        if let Input::Terminal { mut editor, history: Some(path), .. } = self {
            let _ = editor.save_history(&path);
        }
    }
}

/// `get takes 1 word (KEY), not 2; quote a key with spaces.`
fn wrong_count(command: &str, form: &str, want: usize, got: usize) -> String {
    let words = if want == 1 { "word" } else { "words" };
    format!("{command} takes {want} {words} ({form}), not {got}; quote a word with spaces.")
}

#[cfg(test)]
mod test {
    use super::*;

    fn put(key: &str, value: &str) -> Line {
        Line::Put(key.into(), value.into())
    }

    #[test]
    fn words_split_as_in_a_shell() {
        assert_eq!(parse_line("get k"), Line::Get("k".into()));
        assert_eq!(parse_line("  GET   k  "), Line::Get("k".into()), "extra spaces change nothing");
        assert_eq!(parse_line("DEL 'a key'"), Line::Del("a key".into()));
        assert_eq!(parse_line(r#"put "a key" "a value with spaces""#), put("a key", "a value with spaces"));
        assert_eq!(parse_line("put k 'it''s'"), put("k", "its"));
        assert_eq!(parse_line(r#"put k "say \"hi\"""#), put("k", r#"say "hi""#));
        assert_eq!(parse_line(r"put k a\ b"), put("k", "a b"));
        assert_eq!(parse_line("put k ''"), put("k", ""), "an empty value");
        assert_eq!(parse_line("put 'é€𝄞' ✓"), put("é€𝄞", "✓"));
    }

    #[test]
    fn blank_lines_comments_and_help() {
        for line in ["", "   ", "\t", "# a comment", "   # put k v"] {
            assert_eq!(parse_line(line), Line::Blank, "{line:?}");
        }
        assert_eq!(parse_line("help"), Line::Help);
        assert_eq!(parse_line("HELP"), Line::Help);
        for quit in ["quit", "exit", " QUIT ", "Exit"] {
            assert_eq!(parse_line(quit), Line::Quit, "{quit:?}");
        }
        assert_eq!(parse_line("get quit"), Line::Get("quit".into()), "a key named quit");
        assert_eq!(parse_line("put k '#not a comment'"), put("k", "#not a comment"));
    }

    #[test]
    fn mistakes_get_whole_sentences() {
        let invalid = |line| match parse_line(line) {
            Line::Invalid(why) => why,
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(invalid("get"), "get takes 1 word (KEY), not 0; quote a word with spaces.");
        assert_eq!(invalid("get a b"), "get takes 1 word (KEY), not 2; quote a word with spaces.");
        assert_eq!(invalid("put k"), "put takes 2 words (KEY VALUE), not 1; quote a word with spaces.");
        assert_eq!(invalid("put k v w"), "put takes 2 words (KEY VALUE), not 3; quote a word with spaces.");
        assert_eq!(invalid("put 'k v"), "the line has an unclosed quote.");
        assert_eq!(invalid("help me"), "help takes no arguments.");
        assert_eq!(invalid("quit now"), "quit takes no arguments.");
        assert_eq!(invalid("EXIT 1"), "exit takes no arguments.");
        assert_eq!(invalid("del"), "del takes 1 word (KEY), not 0; quote a word with spaces.");
        assert_eq!(invalid("rm k"), "unknown command \"rm\": expected get KEY, put KEY VALUE, del KEY, help or quit.");
        let long = "x".repeat(100);
        assert_eq!(
            invalid(&long),
            format!(
                "unknown command \"{}…\" (100 bytes): expected get KEY, put KEY VALUE, del KEY, help or quit.",
                "x".repeat(64)
            )
        );
    }
}
