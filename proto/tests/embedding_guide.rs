//! docs/embedding.md shows, in full and in order, the files of
//! examples/embedded-minimal (the crate CI builds for thumbv7em): every
//! code block after a `<!-- file: PATH -->` line is a piece of that file,
//! the pieces of a file joined by blank lines are the whole file, and every
//! file of the crate is shown. So the guide's code is the code that builds.
//! (Its RAM table is checked on the target by firmware/build.rs.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const GUIDE: &str = include_str!("../../docs/embedding.md");
const MARKER: &str = "<!-- file: ";

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/embedded-minimal")
}

/// The guide's pieces of each file, in order.
fn pieces() -> BTreeMap<String, Vec<String>> {
    let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut lines = GUIDE.lines();
    while let Some(line) = lines.next() {
        let Some(path) = line.strip_prefix(MARKER).and_then(|rest| rest.strip_suffix(" -->")) else { continue };
        let fence = lines.next().unwrap_or_default();
        assert!(fence.starts_with("```"), "{path}: a code block must follow its marker, found {fence:?}");
        let mut body = String::new();
        for line in lines.by_ref() {
            if line == "```" {
                break;
            }
            body.push_str(line);
            body.push('\n');
        }
        files.entry(path.to_owned()).or_default().push(body);
    }
    files
}

/// The example crate's own files (relative paths), without what cargo makes.
fn example_files(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if prefix.is_empty() && (name == "target" || name == "Cargo.lock") {
            continue;
        }
        let path = format!("{prefix}{name}");
        if entry.file_type().unwrap().is_dir() {
            example_files(&entry.path(), &format!("{path}/"), out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn the_guide_shows_every_file_of_the_example_whole() {
    let pieces = pieces();
    let mut files = Vec::new();
    example_files(&example_dir(), "", &mut files);
    files.sort();
    assert_eq!(pieces.keys().cloned().collect::<Vec<_>>(), files, "files shown in the guide vs the example's files");
    for (path, parts) in &pieces {
        let file = std::fs::read_to_string(example_dir().join(path)).unwrap();
        assert_eq!(parts.join("\n"), file, "docs/embedding.md's {path} differs from examples/embedded-minimal/{path}");
    }
    assert!(pieces["src/main.rs"].len() >= 5, "main.rs is shown piece by piece");
}

#[test]
fn the_guide_names_what_a_new_user_trips_over() {
    for needed in [
        "default-features = false",
        "critical-section-single-core",
        "_critical_section_1_0_acquire",
        "critical_section::set_impl!",
        "SerialLink",
        "<!-- ram-table -->",
        "store full",
        "features = [\"defmt\"]",
    ] {
        assert!(GUIDE.contains(needed), "docs/embedding.md does not mention {needed}");
    }
}
