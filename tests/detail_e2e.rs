//! Face and hand detailing end to end with the tiny random SD models of
//! tests/fixtures/pipeline: the hand-made keypoints of tests/fixtures/detail (OpenPose JSON,
//! one person with face and both hands on a 128 × 128 canvas) drive masked img2img passes
//! on their crops. Whatever the models draw, every pixel outside the union of the paste
//! masks must come out bit for bit as it went in, and the masked pixels must change.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use candle_core::Device;
use image::RgbImage;
use rotoscope::app::detail_stage::detailer_for_preset;
use rotoscope::detail::{
    DetailSettings, DetailedRegion, DetailerConfig, FaceHandDetailer, StableDiffusionInpainter,
};
use rotoscope::diffusion::image_pipeline::StableDiffusion;
use rotoscope::loaders::model_stack::{load_controlnet, ModelStackSpec};
use rotoscope::loaders::source::HubOptions;
use rotoscope::models::controlnet::ControlNetModel;
use rotoscope::pipeline::plan::plan_batches;
use rotoscope::pipeline::progress::SilentProgress;
use rotoscope::pipeline::runner::Pipeline;
use rotoscope::pipeline::stages::{
    FrameSink, PreparedFrame, Preprocessor, SinkSummary, StageError,
};
use rotoscope::preprocess::openpose::json::read_json_file;
use rotoscope::preprocess::openpose::PoseFrame;
use rotoscope::preset::detail::RegionKind;
use rotoscope::preset::Preset;
use rotoscope::preset::SchedulerKind;
use rotoscope::render::passthrough::PassThroughRenderer;
use rotoscope::video::Frame;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn person() -> PoseFrame {
    let path = manifest().join("tests/fixtures/detail/person_keypoints.json");
    let mut frames = read_json_file(&path, None).unwrap();
    assert_eq!(frames.len(), 1);
    frames.remove(0)
}

fn models() -> (Arc<StableDiffusion>, Arc<ControlNetModel>) {
    let dir = manifest().join("tests/fixtures/pipeline");
    let device = Device::Cpu;
    let hub = HubOptions::from_env(false);
    let sd =
        StableDiffusion::load(&ModelStackSpec::new(dir.to_string_lossy()), &hub, &device).unwrap();
    let cn_dir = dir.join("controlnet_a");
    let openpose = load_controlnet(&cn_dir.to_string_lossy(), None, None, &hub, &device).unwrap();
    (Arc::new(sd), Arc::new(openpose))
}

fn inpainter() -> StableDiffusionInpainter {
    let (sd, openpose) = models();
    StableDiffusionInpainter::new(sd, Some(openpose), SchedulerKind::Ddim)
}

/// Both parts on, tiny detail resolutions and few steps so the test runs in seconds.
fn config() -> DetailerConfig {
    let mut settings = DetailSettings::default();
    for s in [&mut settings.face, &mut settings.hands] {
        s.enabled = true;
        s.steps = 6;
        s.cfg_scale = 5.0;
        s.min_size = 24;
        s.feather = 4;
    }
    settings.face.resolution = 64;
    settings.face.prompt = Some("a detailed face, sharp eyes".into());
    settings.hands.resolution = 48;
    settings.hands.negative_prompt = Some("extra fingers".into());
    DetailerConfig {
        settings,
        prompt: "a dancer, anime style".into(),
        negative_prompt: "blurry".into(),
        base_seed: 5,
        fps: 24.0,
    }
}

/// A frame with texture everywhere, so any change would show.
fn frame(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (40 + (x * 3 + y) % 160) as u8,
            (30 + (x + 5 * y) % 180) as u8,
            (((x / 4 + y / 4) % 2) * 90 + 60) as u8,
        ])
    })
}

/// `true` where some region's paste weight is above 0.
fn union_of_masks(regions: &[DetailedRegion], width: u32, height: u32) -> Vec<bool> {
    let mut union = vec![false; (width * height) as usize];
    for d in regions {
        let r = d.region.rect;
        for y in 0..r.height {
            for x in 0..r.width {
                if d.mask.get(x, y) > 0.0 {
                    union[((r.y + y) * width + r.x + x) as usize] = true;
                }
            }
        }
    }
    union
}

#[test]
fn only_pixels_inside_the_face_and_hand_masks_change() {
    let mut detailer = FaceHandDetailer::new(config(), inpainter()).unwrap();
    // Rendered at a different size than the keypoints' canvas: they are scaled.
    let (width, height) = (160, 144);
    let original = frame(width, height);
    let mut image = original.clone();
    let done = detailer.detail_image(&mut image, &person()).unwrap();

    let kinds: Vec<RegionKind> = done.iter().map(|d| d.region.kind).collect();
    assert_eq!(
        kinds,
        [
            RegionKind::Face,
            RegionKind::LeftHand,
            RegionKind::RightHand
        ]
    );
    let union = union_of_masks(&done, width, height);
    for (x, y, p) in image.enumerate_pixels() {
        if !union[(y * width + x) as usize] {
            assert_eq!(
                p,
                original.get_pixel(x, y),
                "({x}, {y}) is outside every mask"
            );
        }
    }
    // Inside, each region was repainted.
    for d in &done {
        let r = d.region.rect;
        let (mut masked, mut changed) = (0, 0);
        for y in 0..r.height {
            for x in 0..r.width {
                if d.mask.get(x, y) >= 0.5 {
                    masked += 1;
                    changed += (image.get_pixel(r.x + x, r.y + y)
                        != original.get_pixel(r.x + x, r.y + y))
                        as usize;
                }
            }
        }
        assert!(
            masked > 50,
            "{:?}: only {masked} masked pixels",
            d.region.kind
        );
        assert!(
            changed * 10 >= masked * 9,
            "{:?}: {changed} of {masked} masked pixels changed",
            d.region.kind
        );
    }
    // The same image and keypoints detail the same way again (same crops, same seeds).
    let mut again = original.clone();
    detailer.detail_image(&mut again, &person()).unwrap();
    assert_eq!(again, image);
}

/// Adds the person's keypoints to every frame, as the pose preprocessor does.
struct KeypointSource(PoseFrame);

impl Preprocessor for KeypointSource {
    fn name(&self) -> &str {
        "keypoints"
    }

    fn process(&mut self, frame: &mut PreparedFrame) -> Result<(), StageError> {
        frame.annotations.insert(self.0.clone());
        Ok(())
    }
}

#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<Frame>>>);

impl FrameSink for Collected {
    fn write_frame(&mut self, frame: &Frame) -> Result<(), StageError> {
        self.0.lock().unwrap().push(frame.clone());
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<SinkSummary, StageError> {
        Ok(SinkSummary::default())
    }
}

#[test]
fn the_render_pipeline_details_every_frame_with_the_same_seed_per_track() {
    let (width, height) = (128u32, 128u32);
    let source_image = frame(width, height);
    let frames = (0..6u64)
        .map(move |i| Ok::<_, std::io::Error>(Frame::from_rgb_image(i, frame(width, height))));
    let detailer = FaceHandDetailer::new(config(), inpainter()).unwrap();
    let out = Collected::default();
    let mut pipeline = Pipeline::new(
        Box::new(frames),
        Box::new(PassThroughRenderer),
        Box::new(out.clone()),
    );
    pipeline
        .preprocessors
        .push(Box::new(KeypointSource(person())));
    pipeline.detailers.push(Box::new(detailer));
    // Batches [0, 4) and [2, 6): frames 2 and 3 are detailed twice and blended.
    let plan = plan_batches(6, 4, 2).unwrap();
    let report = pipeline.run(&plan, Arc::new(SilentProgress)).unwrap();
    assert_eq!(report.frames, 6);

    // The regions of this still pose, and what is outside them.
    let mut reference = source_image.clone();
    let done = FaceHandDetailer::new(config(), inpainter())
        .unwrap()
        .detail_image(&mut reference, &person())
        .unwrap();
    let union = union_of_masks(&done, width, height);

    let frames = out.0.lock().unwrap();
    for f in frames.iter() {
        let image = f.clone().into_rgb_image().unwrap();
        // A still person keeps its tracks, crops and seeds: every frame comes out the same
        // as the first frame of a fresh detailer.
        assert_eq!(image, reference, "frame {}", f.index);
        for (x, y, p) in image.enumerate_pixels() {
            if !union[(y * width + x) as usize] {
                assert_eq!(
                    p,
                    source_image.get_pixel(x, y),
                    "frame {} ({x}, {y})",
                    f.index
                );
            }
        }
    }
    assert_ne!(reference, source_image);
}

#[test]
fn presets_build_their_detailer() {
    let path = manifest().join("tests/fixtures/detail/still_detail.yaml");
    let preset = Preset::load(&path).unwrap();
    assert!(preset.detail.face.enabled && preset.detail.hands.enabled);
    let (sd, openpose) = models();
    let detailer = detailer_for_preset(&preset, sd.clone(), Some(openpose), 30.0)
        .unwrap()
        .expect("the preset details faces and hands");
    assert_eq!(detailer.config().base_seed, preset.sampler.seed);
    assert_eq!(detailer.config().prompt, preset.prompt);
    // Hands use the openpose ControlNet by default: without one the preset is refused.
    let err = detailer_for_preset(&preset, sd.clone(), None, 30.0)
        .err()
        .unwrap();
    assert!(err.to_string().contains("detail.hands.controlnet"), "{err}");
    // Presets without a detail section detail nothing.
    let plain = Preset::load(&manifest().join("tests/fixtures/presets/still_ddim.yaml")).unwrap();
    assert!(detailer_for_preset(&plain, sd, None, 30.0)
        .unwrap()
        .is_none());
}
