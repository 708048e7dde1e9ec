//! Temporal metrics (docs/ARCHITECTURE.md, "Temporal metrics"; `src/score`) of real renders with the tiny random models on
//! the sample clip (PNG output, so no video compression gets in the way):
//!
//! * every temporal option lowers the warp error below independent per-frame rendering
//!   with a different seed per frame (`sampler.seed_per_frame: increment`);
//! * overlap blending: with chained batches (the default) batch boundaries add no seam, even
//!   with hard cuts; batches that start afresh (`temporal.chain_batches: false`) show seams
//!   with hard cuts (`batch.blend: cut`), which the linear ramp hides. Seam errors are
//!   compared with a one-batch render scored at the same boundaries: the clip's content
//!   alone gives those frame pairs a ratio that is not exactly 1.
//!
//! The figures are printed (`cargo test --test render_score -- --nocapture`) for the record.

mod render_common;

use std::ops::Range;
use std::path::Path;

use render_common::*;
use rotoscope::pipeline::plan::plan_batches;
use rotoscope::score::ScoreReport;

const SIZE: u32 = 64;

/// Renders the first `frames` frames of the sample with a tiny-model preset and scores the
/// result with seams at the batches of `batch` (frames, overlap).
fn render_variant(
    dir: &Path,
    name: &str,
    frames: u64,
    batch: (usize, usize),
    sampler_extra: &str,
    sections: &str,
) -> ScoreReport {
    let preset = dir.join(format!("{name}.yaml"));
    let batch_yaml = format!("batch: {{frames: {}, overlap: {}}}\n", batch.0, batch.1);
    let sections = if sections.contains("batch:") {
        sections.to_string()
    } else {
        format!("{sections}{batch_yaml}")
    };
    std::fs::write(&preset, tiny_preset(SIZE, sampler_extra, &sections)).unwrap();
    let out = dir.join(format!("{name}/"));
    let range = format!("..{frames}");
    let sample = repo_path("samples/astronaut.mp4");
    assert_success(&render(
        &sample,
        &preset,
        &out,
        &["--frames", &range, "--quiet"],
    ));
    let inputs = input_frames(&sample, 0..frames);
    let report = score(&inputs, &out, &batch_ranges(frames, batch));
    eprintln!(
        "{name:>24}: warp error {:.6}  seam error {:.3}   input: warp error {:.6}  seam error {:.3}",
        report.output.warp_error.unwrap(),
        report.output.seam_error.unwrap_or(f64::NAN),
        report.input.warp_error.unwrap(),
        report.input.seam_error.unwrap_or(f64::NAN),
    );
    report
}

fn batch_ranges(frames: u64, (batch, overlap): (usize, usize)) -> Vec<Range<u64>> {
    plan_batches(frames as usize, batch, overlap)
        .unwrap()
        .batches
        .iter()
        .map(|b| b.start as u64..b.end as u64)
        .collect()
}

fn warp(report: &ScoreReport) -> f64 {
    report.output.warp_error.unwrap()
}

fn seam(report: &ScoreReport) -> f64 {
    report.output.seam_error.unwrap()
}

#[test]
fn temporal_options_lower_the_warp_error() {
    let dir = tempfile::tempdir().unwrap();
    let variant = |name: &str, sampler: &str, temporal: &str| {
        render_variant(dir.path(), name, 24, (96, 10), sampler, temporal)
    };
    // Independent frames: no temporal conditioning and a new seed for every frame.
    let independent = variant("independent", "  seed_per_frame: increment\n", "");
    let same_seed = variant("same-seed", "", "");
    let temporalnet = variant(
        "temporalnet",
        "",
        "temporal:\n  temporalnet: {enabled: true, model: @NET@, scale: 0.8}\n",
    );
    let cross_frame = variant(
        "cross-frame-attention",
        "",
        "temporal:\n  cross_frame_attention: {enabled: true}\n",
    );
    let flow_init = variant(
        "flow-init",
        "",
        "temporal:\n  flow_init: {enabled: true, strength: 0.35}\n",
    );
    let all = variant("all-temporal", "", ALL_TEMPORAL);

    for (name, report) in [
        ("same seed", &same_seed),
        ("temporalnet", &temporalnet),
        ("cross-frame attention", &cross_frame),
        ("flow init", &flow_init),
        ("all temporal options", &all),
    ] {
        assert!(
            warp(report) < 0.5 * warp(&independent),
            "{name}: warp error {} not well below independent frames' {}",
            warp(report),
            warp(&independent)
        );
    }
    // Flow init moves the previous output along the input's motion: better than the same
    // seed alone, and so is everything together.
    assert!(warp(&flow_init) < 0.97 * warp(&same_seed));
    assert!(warp(&all) < 0.97 * warp(&same_seed));
}

#[test]
fn ramp_blending_keeps_seams_near_one_unlike_hard_cuts() {
    let dir = tempfile::tempdir().unwrap();
    // 36 frames in batches of 12 sharing 4: [0,12) [8,20) [16,28) [24,36), three seams.
    let variant = |name: &str, blend: &str, chain: bool| {
        let temporal = format!(
            "{ALL_TEMPORAL}  chain_batches: {chain}\nbatch: {{frames: 12, overlap: 4, blend: {blend}}}\n"
        );
        render_variant(dir.path(), name, 36, (12, 4), "", &temporal)
    };
    let chained_ramp = variant("chained-ramp", "ramp", true);
    let chained_cut = variant("chained-cut", "cut", true);
    let fresh_ramp = variant("fresh-batches-ramp", "ramp", false);
    let fresh_cut = variant("fresh-batches-cut", "cut", false);
    // One batch: no seam at all, scored at the same boundaries. Its "seam error" is what
    // the clip's own motion gives those frame pairs.
    let single = render_variant(
        dir.path(),
        "one-batch",
        36,
        (12, 4),
        "",
        &format!("{ALL_TEMPORAL}batch: {{frames: 96, overlap: 4}}\n"),
    );

    // The clip's content alone gives its boundary pairs a ratio of seam(single), not exactly
    // 1: seams are measured against that.
    let added = |r: &ScoreReport| seam(r) / seam(&single);
    eprintln!(
        "seam error over one batch's: chained ramp {:.3}, chained cut {:.3}, fresh ramp {:.3}, fresh cut {:.3}",
        added(&chained_ramp),
        added(&chained_cut),
        added(&fresh_ramp),
        added(&fresh_cut)
    );
    assert!(
        (added(&chained_ramp) - 1.0).abs() < 0.05,
        "chained batches with the ramp add a seam: {} vs one batch {}",
        seam(&chained_ramp),
        seam(&single)
    );
    assert!(
        (added(&chained_cut) - 1.0).abs() < 0.05,
        "chained batches hide even hard cuts"
    );
    assert!(
        (added(&fresh_ramp) - 1.0).abs() < 0.1,
        "the ramp hides the restart of fresh batches: {}",
        added(&fresh_ramp)
    );
    assert!(
        added(&fresh_cut) > 1.25 && seam(&fresh_cut) > 1.25 * seam(&fresh_ramp),
        "fresh batches with hard cuts ({}) should show a clear seam over the ramp ({})",
        seam(&fresh_cut),
        seam(&fresh_ramp)
    );
}
