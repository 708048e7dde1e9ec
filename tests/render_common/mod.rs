//! Shared helpers of the render tests (tests/render_*.rs): tiny-model presets, the models
//! directory of the preprocessors, reading PNG outputs and input frames, scoring.
#![allow(dead_code)]

#[path = "../cli_common/mod.rs"]
mod cli;
#[path = "../models_common/mod.rs"]
mod models;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rotoscope::flow::FlowParams;
use rotoscope::score::{ScoreReport, TemporalScorer};
use rotoscope::video::{Frame, ReadOptions, VideoReader};

#[allow(unused_imports)]
pub use cli::{assert_success, repo_path};
/// Where the preprocessors' real weights are: `$ROTOSCOPE_MODELS` or `<repo>/models`
/// (scripts/fetch-models.sh). Panics with instructions when they are missing.
#[allow(unused_imports)]
pub use models::preprocessor_models_dir as models_dir;

/// The tiny random pipeline of the parity tests.
pub fn fixture_pipeline() -> PathBuf {
    repo_path("tests/fixtures/pipeline")
}

/// `tests/fixtures/presets/render_temporal.yaml`.
pub fn temporal_preset() -> PathBuf {
    repo_path("tests/fixtures/presets/render_temporal.yaml")
}

/// A preset on the tiny models at `size`² with the given extra YAML sections (`temporal`,
/// `batch`, ...) and extra `sampler` keys, model paths absolute. img2img at strength 0.5, so
/// that the source frame shapes the output more than the seed's noise does.
pub fn tiny_preset(size: u32, sampler_extra: &str, sections: &str) -> String {
    let models = fixture_pipeline();
    format!(
        "name: tiny\nmodel:\n  base: {}\nprompt: a dancer on a stage\nnegative_prompt: blurry\n\
         sampler:\n  scheduler: euler_ancestral\n  steps: 6\n  cfg_scale: 6.0\n  seed: 11\n  strength: 0.5\n{sampler_extra}\
         resolution: {{width: {size}, height: {size}}}\noutput: {{encoder_preset: ultrafast}}\n{sections}",
        models.display()
    )
    .replace("@NET@", &models.join("controlnet_a").display().to_string())
}

/// The `temporal` section with everything on (TemporalNet = the fixture's controlnet_a).
pub const ALL_TEMPORAL: &str = "temporal:
  temporalnet: {enabled: true, model: @NET@, scale: 0.8, warp: true}
  cross_frame_attention: {enabled: true}
  flow_init: {enabled: true, strength: 0.35}
";

/// `rotoscope render INPUT -p PRESET -o OUTPUT EXTRA...` with the models directory set.
pub fn render_command(input: &Path, preset: &Path, output: &Path, extra: &[&str]) -> Command {
    let mut command = cli::command(["render"]);
    command
        .arg(input)
        .arg("-p")
        .arg(preset)
        .arg("-o")
        .arg(output)
        .args(extra)
        .env("ROTOSCOPE_MODELS", models::models_dir());
    command
}

pub fn render(input: &Path, preset: &Path, output: &Path, extra: &[&str]) -> Output {
    cli::capture(&mut render_command(input, preset, output, extra))
}

/// The frames of a PNG sequence directory, in name order.
pub fn png_frames(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
}

/// Decoded RGB of every PNG in `dir`, in name order.
pub fn decoded_pngs(dir: &Path) -> Vec<image::RgbImage> {
    png_frames(dir)
        .into_iter()
        .map(|(_, bytes)| image::load_from_memory(&bytes).unwrap().to_rgb8())
        .collect()
}

/// Input frames `range` of `input`, as rotoscope decodes them.
pub fn input_frames(input: &Path, range: Range<u64>) -> Vec<Frame> {
    let options = ReadOptions {
        frames: Some(range),
        ..ReadOptions::default()
    };
    VideoReader::open_with(input, options)
        .unwrap()
        .map(|f| f.unwrap())
        .collect()
}

/// `rotoscope score`'s metrics of the PNG output in `dir` against `inputs`, with seams at
/// `batches` (frame ranges).
pub fn score(inputs: &[Frame], dir: &Path, batches: &[Range<u64>]) -> ScoreReport {
    let outputs = decoded_pngs(dir);
    assert_eq!(
        outputs.len(),
        inputs.len(),
        "frame count of {}",
        dir.display()
    );
    let (w, h) = outputs[0].dimensions();
    let mut scorer = TemporalScorer::new(w, h, FlowParams::default());
    for (input, output) in inputs.iter().zip(&outputs) {
        scorer.push((input.width, input.height, &input.data), output.as_raw());
    }
    scorer.finish(Some(batches))
}

/// Finished batches (manifest written) in a render's work directory.
pub fn finished_batches(work: &Path) -> usize {
    finished_since(work, std::time::UNIX_EPOCH)
}

/// Batches finished (manifest written) at or after `since`.
pub fn finished_since(work: &Path, since: std::time::SystemTime) -> usize {
    std::fs::read_dir(work)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.starts_with("batch_")
                        && !name.ends_with(".partial")
                        && std::fs::metadata(e.path().join("manifest.json"))
                            .and_then(|m| m.modified())
                            .is_ok_and(|t| t >= since)
                })
                .count()
        })
        .unwrap_or(0)
}
