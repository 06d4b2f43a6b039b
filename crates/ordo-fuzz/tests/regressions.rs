//! The inputs that once crashed, hung, ran away or were accepted as nonsense (kept under
//! `regressions/<target>/`) are each rejected by their parser, without a panic and in bounded time,
//! and a short fuzz run of every target finds no panic.

use std::time::{Duration, Instant};

#[test]
fn every_saved_regression_input_is_handled_without_a_panic() {
    let ws = ordo_fuzz::targets::Workspace::new().unwrap();
    let mut seen = 0;
    for target in ordo_fuzz::ALL {
        for path in ordo_fuzz::regression_inputs(target) {
            let input = std::fs::read(&path).unwrap();
            let started = Instant::now();
            match ordo_fuzz::run_one(target, &input, &ws) {
                Err(message) => panic!("{}: panicked: {message}", path.display()),
                Ok(accepted) => assert!(!accepted, "{}: accepted, but it is bad input", path.display()),
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{}: took {:?}", path.display(), started.elapsed());
            seen += 1;
        }
    }
    assert!(seen >= 25, "only {seen} regression inputs found");
}

#[test]
fn a_short_fuzz_run_of_every_target_finds_no_panic() {
    let out = tempfile::tempdir().unwrap();
    for target in ordo_fuzz::ALL {
        let r = ordo_fuzz::fuzz(target, 1500, 7, out.path()).unwrap();
        assert_eq!(r.execs, 1500);
        assert_eq!(r.panics, 0, "{}: inputs saved as {:?}", r.target, r.saved);
        assert_eq!(r.slow, 0, "{}: slow inputs saved as {:?}", r.target, r.saved);
    }
}

#[test]
fn the_mutator_is_deterministic_and_bounded() {
    use rand::SeedableRng;
    let seeds = vec![b"name = \"x\"\nsteps = 10\n".to_vec(), vec![0u8; 100]];
    let run = |seed| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..500).map(|i| ordo_fuzz::mutate::mutate(&seeds[i % 2], &seeds, true, &mut rng)).collect::<Vec<_>>()
    };
    let (a, b) = (run(3), run(3));
    assert_eq!(a, b);
    assert_ne!(a, run(4));
    assert!(a.iter().all(|m| m.len() <= ordo_fuzz::mutate::MAX_INPUT));
    // The structured edits reach the values that break parsers.
    assert!(a
        .iter()
        .any(|m| String::from_utf8_lossy(m).contains("1e300") || String::from_utf8_lossy(m).contains("nan")));
}
