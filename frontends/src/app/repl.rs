//! What one line of `kvio cli` means: words split as a POSIX shell splits
//! them (`shell-words`: quotes and backslashes), blank lines and `#`
//! comments skipped, commands in any case, and the `help` text. The
//! connection, the answers and the exit status are [`crate::cli`]'s.

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
    /// Not a command; the reason, a whole sentence.
    Invalid(String),
}

/// What `help` prints.
pub(crate) const HELP: &str = "\
get KEY          print the value stored under KEY, or (nil)
put KEY VALUE    store VALUE under KEY; prints OK, or ERR and the reason
del KEY          delete KEY; prints OK, or (nil) if it was not there
help             this list
Quote words with spaces as in a shell: put \"a key\" 'a value'. Lines starting with # are skipped.";

/// The commands, for an unknown one's error.
const USAGE: &str = "expected get KEY, put KEY VALUE, del KEY or help.";

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
        assert_eq!(invalid("del"), "del takes 1 word (KEY), not 0; quote a word with spaces.");
        assert_eq!(invalid("rm k"), "unknown command \"rm\": expected get KEY, put KEY VALUE, del KEY or help.");
        let long = "x".repeat(100);
        assert_eq!(
            invalid(&long),
            format!(
                "unknown command \"{}…\" (100 bytes): expected get KEY, put KEY VALUE, del KEY or help.",
                "x".repeat(64)
            )
        );
    }
}
