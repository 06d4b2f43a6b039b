//! Regression tests of the reliability defects a hostile user found: each runs the `ordo` binary on
//! the bad input and checks the clear error, the non-zero exit and that nothing was lost.

use std::path::Path;
use std::process::Command;

fn ordo(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ordo")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn corpus(out: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["world", "corpus", "--out", out.to_str().unwrap(), "--corpus", "20"];
    args.extend_from_slice(&["--preferences", "5", "--rl-prompts", "5", "--eval-prompts", "5"]);
    args.extend_from_slice(extra);
    ordo(&args)
}

#[test]
fn world_corpus_never_replaces_a_directory_or_file_it_did_not_write() {
    let tmp = tempfile::tempdir().unwrap();
    // A directory of the user's files is left as it was.
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::write(theirs.join("notes.txt"), "keep me").unwrap();
    for extra in [&[][..], &["--force"][..]] {
        let (code, _, err) = corpus(&theirs, extra);
        assert_ne!(code, 0, "replaced a foreign directory with {extra:?}");
        assert!(err.contains("ordo will not replace it"), "{err}");
        assert_eq!(std::fs::read_to_string(theirs.join("notes.txt")).unwrap(), "keep me");
        assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 1);
    }
    // A file is left as it was, and no hidden copy appears beside it.
    let file = tmp.path().join("file.txt");
    std::fs::write(&file, "mine").unwrap();
    let (code, _, err) = corpus(&file, &["--force"]);
    assert_ne!(code, 0);
    assert!(err.contains("is not a directory"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // An earlier ordo output is replaced only with --force.
    let ours = tmp.path().join("ours");
    assert_eq!(corpus(&ours, &[]).0, 0);
    let (code, _, err) = corpus(&ours, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("--force"), "{err}");
    let (code, _, err) = corpus(&ours, &["--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(ours.join("corpus.jsonl").is_file());
}
