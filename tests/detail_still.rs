//! `rotoscope still` with OpenPose JSON poses: the keypoints are drawn into the pose map as
//! ControlNet's annotator draws them, and the preset's `detail:` section details the faces
//! and hands they locate (tiny models of tests/fixtures/pipeline, keypoints of
//! tests/fixtures/detail/person_keypoints.json).

mod cli_common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use candle_core::Device;
use image::RgbImage;
use rotoscope::app::detail_stage::detailer_for_preset;
use rotoscope::detail::{DetailerConfig, FaceHandDetailer, StableDiffusionInpainter};
use rotoscope::diffusion::image_pipeline::StableDiffusion;
use rotoscope::diffusion::schedulers::{SamplerOptions, TimestepSpacing};
use rotoscope::loaders::model_stack::{load_controlnet, ModelStackSpec};
use rotoscope::loaders::source::HubOptions;
use rotoscope::models::controlnet::ControlNetModel;
use rotoscope::preprocess::openpose::json::{read_json_file, to_json_string};
use rotoscope::preprocess::openpose::{draw_pose_map, DrawParts, PoseFrame};
use rotoscope::preset::Preset;
use rotoscope::preset::SchedulerKind;

use cli_common::{assert_error_code, assert_success, rotoscope_in};

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const PERSON: &str = "tests/fixtures/detail/person_keypoints.json";
const DETAIL_PRESET: &str = "tests/fixtures/detail/still_detail.yaml";

fn still(args: &[&str]) -> Output {
    rotoscope_in(&manifest(), ["still"].iter().chain(args))
}

fn person() -> PoseFrame {
    read_json_file(&manifest().join(PERSON), None)
        .unwrap()
        .remove(0)
}

fn png(path: &Path) -> RgbImage {
    image::open(path).unwrap().to_rgb8()
}

/// The detail preset without its `detail:` section, model paths made absolute, in `dir`.
fn plain_preset(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(manifest().join(DETAIL_PRESET)).unwrap();
    let head = text.split("\ndetail:").next().unwrap();
    let fixtures = manifest().join("tests/fixtures/pipeline");
    let path = dir.join("plain.yaml");
    std::fs::write(
        &path,
        head.replace("../pipeline", fixtures.to_str().unwrap()),
    )
    .unwrap();
    path
}

#[test]
fn a_json_pose_renders_like_its_drawn_map() {
    let dir = tempfile::tempdir().unwrap();
    let preset = plain_preset(dir.path());
    let preset = preset.to_str().unwrap();
    // The map ControlNet's annotator would draw for these keypoints at the render size.
    let map = dir.path().join("map.png");
    draw_pose_map(&person(), 128, 128, DrawParts::default())
        .save(&map)
        .unwrap();
    let from_json = dir.path().join("json.png");
    let from_map = dir.path().join("map-out.png");
    assert_success(&still(&[
        "--pose",
        PERSON,
        "-p",
        preset,
        "-o",
        from_json.to_str().unwrap(),
    ]));
    assert_success(&still(&[
        "--pose",
        map.to_str().unwrap(),
        "-p",
        preset,
        "-o",
        from_map.to_str().unwrap(),
    ]));
    assert_eq!(png(&from_json), png(&from_map));
}

/// The tiny SD models and an openpose ControlNet.
fn tiny_models() -> (StableDiffusion, ControlNetModel) {
    let dir = manifest().join("tests/fixtures/pipeline");
    let hub = HubOptions::from_env(false);
    let spec = ModelStackSpec::new(dir.to_string_lossy());
    let sd = StableDiffusion::load(&spec, &hub, &Device::Cpu).unwrap();
    let cn_dir = dir.join("controlnet_a");
    let openpose =
        load_controlnet(&cn_dir.to_string_lossy(), None, None, &hub, &Device::Cpu).unwrap();
    (sd, openpose)
}

/// The library's detailer set up as the preset says, on the tiny models.
fn detailer(preset: &Preset) -> FaceHandDetailer<StableDiffusionInpainter> {
    let (sd, openpose) = tiny_models();
    let inpainter =
        StableDiffusionInpainter::new(Arc::new(sd), Some(Arc::new(openpose)), SchedulerKind::Ddim);
    let config = DetailerConfig {
        settings: preset.detail.clone(),
        prompt: preset.prompt.clone(),
        negative_prompt: preset.negative_prompt.clone(),
        base_seed: preset.sampler.seed,
        fps: 30.0,
    };
    FaceHandDetailer::new(config, inpainter).unwrap()
}

#[test]
fn json_poses_are_detailed_only_inside_their_regions() {
    let dir = tempfile::tempdir().unwrap();
    let plain_out = dir.path().join("plain.png");
    let detailed_out = dir.path().join("detailed.png");
    let plain = plain_preset(dir.path());
    assert_success(&still(&[
        "--pose",
        PERSON,
        "-p",
        plain.to_str().unwrap(),
        "-o",
        plain_out.to_str().unwrap(),
    ]));
    let run = still(&[
        "--pose",
        PERSON,
        "-p",
        DETAIL_PRESET,
        "-o",
        detailed_out.to_str().unwrap(),
    ]);
    assert_success(&run);
    let plain = png(&plain_out);
    let detailed = png(&detailed_out);

    // The binary's result is the plain render detailed by the library.
    let preset = Preset::load(&manifest().join(DETAIL_PRESET)).unwrap();
    let mut expected = plain.clone();
    let regions = detailer(&preset)
        .detail_image(&mut expected, &person())
        .unwrap();
    assert_eq!(regions.len(), 3);
    assert_eq!(detailed, expected);

    let (w, h) = detailed.dimensions();
    let mut inside = vec![false; (w * h) as usize];
    for d in &regions {
        let r = d.region.rect;
        for y in 0..r.height {
            for x in 0..r.width {
                if d.mask.get(x, y) > 0.0 {
                    inside[((r.y + y) * w + r.x + x) as usize] = true;
                }
            }
        }
    }
    let mut changed = 0;
    for (x, y, p) in detailed.enumerate_pixels() {
        if inside[(y * w + x) as usize] {
            changed += (p != plain.get_pixel(x, y)) as usize;
        } else {
            assert_eq!(
                p,
                plain.get_pixel(x, y),
                "({x}, {y}) is outside the regions"
            );
        }
    }
    assert!(changed > 200, "only {changed} pixels changed");
}

#[test]
fn every_frame_of_a_json_file_is_a_pose_and_images_are_not_detailed() {
    let dir = tempfile::tempdir().unwrap();
    // Two frames in one file (ComfyUI's list form): the person, then the person moved.
    let mut moved = person();
    for p in moved.people.iter_mut() {
        for hand in [&mut p.left_hand, &mut p.right_hand].into_iter().flatten() {
            for k in hand.points.iter_mut() {
                k.y -= 10.0;
            }
        }
    }
    let two = dir.path().join("two.json");
    std::fs::write(
        &two,
        format!(
            "[{}, {}]",
            to_json_string(&person()),
            to_json_string(&moved)
        ),
    )
    .unwrap();
    let out = dir.path().join("sheet.png");
    assert_success(&still(&[
        "--pose",
        two.to_str().unwrap(),
        "-p",
        DETAIL_PRESET,
        "-o",
        out.to_str().unwrap(),
    ]));
    let first = png(&dir.path().join("sheet-0.png"));
    let second = png(&dir.path().join("sheet-1.png"));
    assert_ne!(first, second);
    // The first frame is the single-pose file's result.
    let single = dir.path().join("single.png");
    assert_success(&still(&[
        "--pose",
        PERSON,
        "-p",
        DETAIL_PRESET,
        "-o",
        single.to_str().unwrap(),
    ]));
    assert_eq!(first, png(&single));

    // A pose image has no keypoints: rendered, not detailed, and the user is told.
    let map = dir.path().join("map.png");
    draw_pose_map(&person(), 128, 128, DrawParts::default())
        .save(&map)
        .unwrap();
    let from_map = dir.path().join("from-map.png");
    let run = still(&[
        "--pose",
        map.to_str().unwrap(),
        "-p",
        DETAIL_PRESET,
        "-o",
        from_map.to_str().unwrap(),
    ]);
    assert_success(&run);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("not detailed"), "{stderr}");
    let plain = dir.path().join("plain.png");
    let plain_preset = plain_preset(dir.path());
    assert_success(&still(&[
        "--pose",
        map.to_str().unwrap(),
        "-p",
        plain_preset.to_str().unwrap(),
        "-o",
        plain.to_str().unwrap(),
    ]));
    assert_eq!(png(&from_map), png(&plain));
}

#[test]
fn bad_json_poses_are_reported_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.png");
    let out_arg = out.to_str().unwrap();

    let broken = dir.path().join("hand.json");
    std::fs::write(
        &broken,
        r#"{"people": [{"hand_left_keypoints_2d": [1, 2, 3]}], "canvas_width": 64, "canvas_height": 64}"#,
    )
    .unwrap();
    let run = still(&[
        "--pose",
        broken.to_str().unwrap(),
        "-p",
        DETAIL_PRESET,
        "-o",
        out_arg,
    ]);
    assert_error_code(&run, 2, &["--pose", "hand.json", "hand_left_keypoints_2d"]);

    // OpenPose's own files give no canvas size: the preset must give the resolution.
    let no_canvas = dir.path().join("openpose.json");
    std::fs::write(&no_canvas, r#"{"version": 1.3, "people": []}"#).unwrap();
    let text = std::fs::read_to_string(manifest().join(DETAIL_PRESET))
        .unwrap()
        .replace("resolution:\n  width: 128\n  height: 128\n", "")
        .replace(
            "../pipeline",
            manifest().join("tests/fixtures/pipeline").to_str().unwrap(),
        );
    let no_resolution = dir.path().join("fit.yaml");
    std::fs::write(&no_resolution, text).unwrap();
    let run = still(&[
        "--pose",
        no_canvas.to_str().unwrap(),
        "-p",
        no_resolution.to_str().unwrap(),
        "-o",
        out_arg,
    ]);
    assert_error_code(&run, 2, &["openpose.json", "canvas_width", "resolution"]);
    assert!(!out.exists());
}

/// The render's detailer samples with the preset's `sampler.eta` and
/// `sampler.timestep_spacing`, resolved as the frame renderer's are.
#[test]
fn the_presets_detailer_takes_the_sampler_options() {
    let mut preset = Preset::load(&manifest().join(DETAIL_PRESET)).unwrap();
    preset.sampler.scheduler = SchedulerKind::Ddim;
    preset.sampler.eta = Some(0.5);
    preset.sampler.timestep_spacing = Some(TimestepSpacing::Trailing);
    preset.validate("test").unwrap();
    let (sd, openpose) = tiny_models();
    let detailer = detailer_for_preset(&preset, Arc::new(sd), Some(Arc::new(openpose)), 30.0)
        .unwrap()
        .expect("the preset details faces or hands");
    let sampler = detailer.inpainter().sampler();
    assert_eq!(sampler.scheduler, SchedulerKind::Ddim);
    assert_eq!(
        sampler.options,
        SamplerOptions {
            eta: Some(0.5),
            timestep_spacing: Some(TimestepSpacing::Trailing),
        }
    );
}
