//! The quick, stable pass over the fuzz targets of `vault_mcp::fuzzing`: every file of
//! `fuzz/corpus/<target>/` (hand-written seeds, regression inputs and what libFuzzer found in
//! the long runs of `scripts/fuzz.sh`) is replayed through its target, and each target then
//! gets a few thousand proptest inputs: random bytes, and corpus files with random edits.
//! A failure prints the input; add it to the corpus once the bug is fixed.

use std::path::PathBuf;

use proptest::{
    prelude::*,
    test_runner::{RngAlgorithm, TestRng, TestRunner},
};

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    (
        "template_and_destination",
        vault_mcp::fuzzing::template_and_destination,
    ),
    ("scrubber", vault_mcp::fuzzing::scrubber),
    ("policy", vault_mcp::fuzzing::policy),
    ("tool_arguments", vault_mcp::fuzzing::tool_arguments),
    ("pack_loading", vault_mcp::fuzzing::pack_loading),
    ("sse_framing", vault_mcp::fuzzing::sse_framing),
    ("stdio_framing", vault_mcp::fuzzing::stdio_framing),
];

/// Generated inputs per target.
const CASES: u32 = 2_000;

/// Bytes that matter to the parsers under test, inserted by the edits.
const TOKENS: &[&str] = &[
    "{", "}", "{a}", "%", "%2e", "%2F", "\\", "\n", "\r\n", "://", ":", "@", "/", "//", "..", ".",
    "?", "#", "=", "\"", "[", "]", "\\u00", "&#", "*", "**", "0", "-1", "1e999", "\u{0}", "é",
];

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    files.sort();
    files
}

/// One random edit: replace, insert or delete bytes, insert a token, or splice in a piece of
/// the input itself.
#[derive(Debug, Clone)]
struct Edit {
    kind: u8,
    at: usize,
    from: usize,
    len: usize,
    byte: u8,
}

fn edit() -> impl Strategy<Value = Edit> {
    (
        any::<u8>(),
        any::<usize>(),
        any::<usize>(),
        0usize..16,
        any::<u8>(),
    )
        .prop_map(|(kind, at, from, len, byte)| Edit {
            kind,
            at,
            from,
            len,
            byte,
        })
}

fn apply(mut d: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let at = if d.is_empty() {
            0
        } else {
            e.at % (d.len() + 1)
        };
        match e.kind % 5 {
            0 if at < d.len() => d[at] = e.byte,
            1 => d.insert(at, e.byte),
            2 => {
                let end = (at + e.len).min(d.len());
                d.drain(at..end);
            }
            3 => {
                let t = TOKENS[usize::from(e.byte) % TOKENS.len()].as_bytes();
                d.splice(at..at, t.iter().copied());
            }
            _ if !d.is_empty() => {
                let from = e.from % d.len();
                let piece = d[from..(from + e.len).min(d.len())].to_vec();
                d.splice(at..at, piece);
            }
            _ => {}
        }
    }
    d
}

fn inputs(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..300),
        3 => (0..n, proptest::collection::vec(edit(), 1..8))
            .prop_map(move |(i, edits)| apply(seeds[i].clone(), &edits)),
    ]
}

fn replay_and_generate(name: &str, target: Target) {
    let files = corpus(name);
    assert!(!files.is_empty(), "fuzz/corpus/{name} is empty");
    for (path, data) in &files {
        if std::panic::catch_unwind(|| target(data)).is_err() {
            panic!("{} fails", path.display());
        }
    }
    let seeds = files.into_iter().map(|(_, d)| d).collect();
    let config = ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    // Deterministic, so that CI fails only on a change, never on luck; the long runs of
    // scripts/fuzz.sh are the ones that explore.
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
        .run(&inputs(seeds), |data| {
            target(&data);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
}

#[test]
fn template_and_destination() {
    replay_and_generate(TARGETS[0].0, TARGETS[0].1);
}

#[test]
fn scrubber() {
    replay_and_generate(TARGETS[1].0, TARGETS[1].1);
}

#[test]
fn policy() {
    replay_and_generate(TARGETS[2].0, TARGETS[2].1);
}

#[test]
fn tool_arguments() {
    replay_and_generate(TARGETS[3].0, TARGETS[3].1);
}

#[test]
fn pack_loading() {
    replay_and_generate(TARGETS[4].0, TARGETS[4].1);
}

#[test]
fn sse_framing() {
    replay_and_generate(TARGETS[5].0, TARGETS[5].1);
}

#[test]
fn stdio_framing() {
    replay_and_generate(TARGETS[6].0, TARGETS[6].1);
}

/// Every target has a corpus directory and a fuzz target file, and nothing else is there.
#[test]
fn corpus_and_fuzz_targets_match() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut dirs: Vec<String> = std::fs::read_dir(root.join("corpus"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut bins: Vec<String> = std::fs::read_dir(root.join("fuzz_targets"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned()
        })
        .collect();
    let mut names: Vec<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    dirs.sort();
    bins.sort();
    names.sort();
    assert_eq!(dirs, names);
    assert_eq!(bins, names);
}
