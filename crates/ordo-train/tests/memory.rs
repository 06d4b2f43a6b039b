//! Memory accounting of `ordo bench stages`: the peak-RSS probe and the bytes a step needs.

use ordo_train::bench::{bench_config, peak_rss_bytes, reset_peak_rss, step_memory_bytes};

#[test]
fn peak_rss_sees_a_large_allocation_and_resets() {
    if !reset_peak_rss() {
        assert!(!cfg!(target_os = "linux"), "Linux exposes /proc/self/clear_refs");
        return;
    }
    let before = peak_rss_bytes().unwrap();
    let big = std::hint::black_box(vec![1u8; 200 << 20]);
    let during = peak_rss_bytes().unwrap();
    assert!(during >= before + (150 << 20), "{before} -> {during}");
    drop(big);
    assert!(reset_peak_rss());
    let after = peak_rss_bytes().unwrap();
    assert!(after + (150 << 20) <= during, "the peak resets: {during} -> {after}");
}

#[test]
fn step_memory_by_hand() {
    let cfg = bench_config();
    let p = cfg.parameter_count() as f64;
    // No tokens: parameters, gradients and two AdamW moments (f32); a reference adds its parameters.
    assert_eq!(step_memory_bytes(&cfg, 0, 0, false), 16.0 * p);
    assert_eq!(step_memory_bytes(&cfg, 0, 0, true), 20.0 * p);
    // One sequence of one token: per layer 7 h + 4 i (computed) + 3 h (its slot), plus 2 vocab, in f32.
    let per_token = 4.0 * ((10.0 * 256.0 + 4.0 * 1024.0) * 4.0 + 2.0 * 512.0);
    assert_eq!(step_memory_bytes(&cfg, 1, 1, false), 16.0 * p + per_token);
    // Two slots sharing one computed token (two rows of one identical token): the slot part twice.
    let per_slot = 4.0 * (3.0 * 256.0 * 4.0 + 2.0 * 512.0);
    assert_eq!(step_memory_bytes(&cfg, 1, 2, false), 16.0 * p + per_token + per_slot);
}
