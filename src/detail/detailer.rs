//! [`FaceHandDetailer`]: for every frame, every tracked face and hand is cropped, rendered
//! larger with a masked img2img pass of its own, and pasted back through a feathered mask.
//!
//! Per region: crop (the smoothed, clamped box) → resize (Lanczos3) so the long side is the
//! detail resolution → masked img2img (strength = denoise, its own prompt, steps, CFG and
//! seed; for hands the openpose ControlNet with the hand's keypoints redrawn in crop
//! coordinates) → resize back → feathered paste. Faces go first, then hands (a hand in
//! front of a face is pasted over it).
//!
//! In the render pipeline a batch's first frames were already detailed at the end of the
//! previous batch (the overlap). Their regions are remembered by frame index and reused, so
//! the tracker sees each frame once and both renderings of an overlap frame are detailed
//! with the same crops and seeds.

use std::collections::BTreeMap;

use image::{imageops, RgbImage};

use super::error::DetailError;
use super::inpaint::{InpaintRequest, RegionInpainter};
use super::mask::{inpaint_mask, paste_mask, Mask, RegionShape};
use super::paste::feathered_paste;
use super::regions::{clamp_to_frame, detail_size, pixel_rect, region_candidates, PixelRect};
use super::tracks::{track_seed, RegionTracker};
use crate::cancel::StopFlag;
use crate::pipeline::plan::Batch;
use crate::pipeline::stages::{Detailer, PreparedFrame, StageError};
use crate::preprocess::openpose::draw::{draw_pose_map, DrawParts};
use crate::preprocess::openpose::keypoints::{Face, Hand, Keypoint, Person, PoseFrame};
use crate::preset::detail::RegionKind;
use crate::preset::detail::{DetailSettings, RegionSettings};
use crate::video::Frame;

/// Region plans are kept for at most this many frames back: more than any batch overlap
/// (batches are under 200 frames).
const MAX_REMEMBERED_FRAMES: u64 = 256;

/// Everything the detailer needs besides the models.
#[derive(Debug, Clone, PartialEq)]
pub struct DetailerConfig {
    pub settings: DetailSettings,
    /// Used where a section gives no prompt of its own (the preset's prompts).
    pub prompt: String,
    pub negative_prompt: String,
    /// Track seeds derive from it (the preset's `sampler.seed`).
    pub base_seed: u64,
    /// Frame rate of the clip, for the smoothing filters' time base.
    pub fps: f64,
}

/// One region of one frame, ready to be detailed.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRegion {
    pub track_id: u64,
    pub kind: RegionKind,
    pub seed: u64,
    /// The crop: the smoothed box clamped into the frame.
    pub rect: PixelRect,
    /// The part's keypoints in frame pixels, as found in this frame (the crop is smoothed;
    /// the mask and the control image must sit where the part really is).
    pub points: Vec<Keypoint>,
    /// The longer side of the keypoints' bounding box (scales the mask's growth).
    pub extent: f32,
}

/// A region that was detailed, with the weights it was pasted with (over `region.rect`).
#[derive(Debug, Clone, PartialEq)]
pub struct DetailedRegion {
    pub region: PlannedRegion,
    pub mask: Mask,
}

/// One region of a batch's report: where a part was (or would be) repainted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RegionReport {
    /// Input frame index.
    pub frame: u64,
    pub track: u64,
    /// `face`, `left hand` or `right hand`.
    pub kind: &'static str,
    pub seed: u64,
    /// The crop, in rendered-frame pixels.
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl RegionReport {
    fn new(frame: u64, region: &PlannedRegion) -> Self {
        RegionReport {
            frame,
            track: region.track_id,
            kind: region.kind.as_str(),
            seed: region.seed,
            x: region.rect.x,
            y: region.rect.y,
            width: region.rect.width,
            height: region.rect.height,
        }
    }
}

/// What detailing (or only tracking) one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchDetail {
    /// Every region with a non-empty paste mask, frame by frame, in paste order.
    pub regions: Vec<RegionReport>,
    /// Diffusion passes run (0 when the batch was only tracked).
    pub inpainted: usize,
}

/// The model-free half of detailing: tracks regions from frame to frame (ids, smoothed
/// boxes, seeds) and remembers them for the frames the next batch renders again. A
/// resumed render advances it over finished batches (cheap) so that the batches it does
/// detail start from the same tracks as in an uninterrupted render.
pub struct RegionPlanner {
    config: DetailerConfig,
    tracker: RegionTracker,
    /// Regions of recently seen frames, by frame index.
    planned: BTreeMap<u64, Vec<PlannedRegion>>,
    last_tracked: Option<u64>,
}

impl RegionPlanner {
    pub fn new(config: DetailerConfig) -> Self {
        let fps = if config.fps.is_finite() && config.fps > 0.0 {
            config.fps
        } else {
            30.0
        };
        RegionPlanner {
            tracker: RegionTracker::new(config.settings.smoothing, fps),
            config: DetailerConfig { fps, ..config },
            planned: BTreeMap::new(),
            last_tracked: None,
        }
    }

    pub fn config(&self) -> &DetailerConfig {
        &self.config
    }

    /// Forgets all tracks (the next frame starts a new clip).
    pub fn reset(&mut self) {
        self.tracker.reset();
        self.planned.clear();
        self.last_tracked = None;
    }

    /// The regions of frame `index` (a `width × height` frame): from the cache when the
    /// frame was seen before, else tracked now. A frame index not after the last tracked one
    /// starts a new clip.
    pub fn plan_regions(
        &mut self,
        index: u64,
        pose: &PoseFrame,
        width: u32,
        height: u32,
    ) -> Vec<PlannedRegion> {
        if let Some(regions) = self.planned.get(&index) {
            return regions.clone();
        }
        if self.last_tracked.is_some_and(|last| index <= last) {
            self.reset();
        }
        let settings = &self.config.settings;
        let candidates = region_candidates(pose, width, height, |kind| {
            let s = settings.for_kind(kind);
            s.enabled.then(|| s.geometry())
        });
        let boxes: Vec<_> = candidates.iter().map(|c| (c.kind, c.square)).collect();
        let time = index as f64 / self.config.fps;
        let tracked = self.tracker.update(time, &boxes);
        let mut regions: Vec<PlannedRegion> = tracked
            .iter()
            .map(|t| {
                let c = &candidates[t.candidate];
                PlannedRegion {
                    track_id: t.track_id,
                    kind: t.kind,
                    seed: track_seed(self.config.base_seed, t.track_id),
                    rect: pixel_rect(&clamp_to_frame(t.square, width, height), width, height),
                    points: c.points.clone(),
                    extent: c.bounds.width.max(c.bounds.height),
                }
            })
            .collect();
        // Faces first, so hands in front of them are pasted last.
        regions.sort_by_key(|r| r.kind.is_hand());
        self.planned.insert(index, regions.clone());
        self.last_tracked = Some(index);
        let oldest = index.saturating_sub(MAX_REMEMBERED_FRAMES);
        self.planned.retain(|&k, _| k >= oldest);
        regions
    }

    /// The regions of frame `index`, its keypoints checked first.
    fn frame_regions(
        &mut self,
        index: u64,
        pose: &PoseFrame,
        width: u32,
        height: u32,
    ) -> Result<Vec<PlannedRegion>, DetailError> {
        if !pose.people.is_empty() && (pose.width == 0 || pose.height == 0) {
            return Err(DetailError::EmptyPoseFrame {
                frame: index,
                width: pose.width,
                height: pose.height,
            });
        }
        Ok(self.plan_regions(index, pose, width, height))
    }

    /// The mask shape and paste weights of `region` in a `frame_w × frame_h` frame; `None`
    /// when nothing would be pasted (too few keypoints inside the crop).
    fn region_mask(
        &self,
        region: &PlannedRegion,
        frame_w: u32,
        frame_h: u32,
    ) -> Option<(RegionShape, Mask)> {
        let settings = self.config.settings.for_kind(region.kind);
        let rect = region.rect;
        let local: Vec<(f32, f32)> = region
            .points
            .iter()
            .filter(|p| p.is_present())
            .map(|p| (p.x - rect.x as f32, p.y - rect.y as f32))
            .collect();
        let feather = settings.feather as f32;
        let shape = RegionShape::new(&local, settings.mask_grow * region.extent, feather)?;
        let mask = paste_mask(
            &shape,
            rect.width,
            rect.height,
            feather,
            rect.frame_edges(frame_w, frame_h),
        );
        (!mask.is_empty()).then_some((shape, mask))
    }

    /// The weights `region` is pasted with over its crop in a `frame_w × frame_h` frame, or
    /// `None` when it is not pasted at all.
    pub fn paste_weights(
        &self,
        region: &PlannedRegion,
        frame_w: u32,
        frame_h: u32,
    ) -> Option<Mask> {
        self.region_mask(region, frame_w, frame_h)
            .map(|(_, mask)| mask)
    }

    /// Tracks a batch whose detailed frames are already known (a finished batch of a
    /// resumed render) exactly as detailing it would, without repainting anything.
    /// `size` is the rendered frames' size.
    pub fn track_batch(
        &mut self,
        batch: &Batch,
        inputs: &[PreparedFrame],
        (width, height): (u32, u32),
    ) -> Result<BatchDetail, DetailError> {
        let mut report = BatchDetail::default();
        for input in inputs {
            let index = input.source.index;
            let regions = self.frame_regions(index, frame_pose(input)?, width, height)?;
            for region in &regions {
                if self.region_mask(region, width, height).is_some() {
                    report.regions.push(RegionReport::new(index, region));
                }
            }
        }
        self.forget_unshared(batch, inputs);
        Ok(report)
    }

    /// Only the frames the next batch renders again can be asked for again.
    fn forget_unshared(&mut self, batch: &Batch, inputs: &[PreparedFrame]) {
        let keep = batch.overlap_with_next.min(inputs.len());
        match inputs.get(inputs.len() - keep) {
            Some(first_shared) if keep > 0 => {
                let from = first_shared.source.index;
                self.planned.retain(|&k, _| k >= from);
            }
            _ => self.planned.clear(),
        }
    }
}

/// The keypoints the pose preprocessor left on a frame.
fn frame_pose(input: &PreparedFrame) -> Result<&PoseFrame, DetailError> {
    input
        .annotations
        .get::<PoseFrame>()
        .ok_or(DetailError::NoKeypoints {
            frame: input.source.index,
        })
}

/// Face and hand detailing; a pipeline [`Detailer`] and a per-image tool for `still`.
pub struct FaceHandDetailer<I: RegionInpainter> {
    planner: RegionPlanner,
    inpainter: I,
    /// Checked before every frame, so Ctrl-C does not wait for a whole batch's detailing.
    stop: Option<StopFlag>,
}

impl<I: RegionInpainter> FaceHandDetailer<I> {
    /// Fails when a section asks for the ControlNet and the inpainter has none.
    pub fn new(config: DetailerConfig, inpainter: I) -> Result<Self, DetailError> {
        Self::from_planner(RegionPlanner::new(config), inpainter)
    }

    /// Continues the tracks of `planner` (e.g. advanced over finished batches).
    pub fn from_planner(planner: RegionPlanner, inpainter: I) -> Result<Self, DetailError> {
        let settings = &planner.config.settings;
        for (section, s) in [("face", &settings.face), ("hands", &settings.hands)] {
            if s.enabled && s.controlnet && !inpainter.has_controlnet() {
                return Err(DetailError::NoOpenposeControlNet { section });
            }
        }
        Ok(FaceHandDetailer {
            planner,
            inpainter,
            stop: None,
        })
    }

    /// Stop between frames once `stop` is requested (with [`DetailError::Interrupted`]).
    pub fn with_stop_flag(mut self, stop: StopFlag) -> Self {
        self.stop = Some(stop);
        self
    }

    pub fn config(&self) -> &DetailerConfig {
        &self.planner.config
    }

    /// What repaints the crops.
    pub fn inpainter(&self) -> &I {
        &self.inpainter
    }

    pub fn planner_mut(&mut self) -> &mut RegionPlanner {
        &mut self.planner
    }

    /// Forgets all tracks (the next frame starts a new clip).
    pub fn reset(&mut self) {
        self.planner.reset();
    }

    /// See [`RegionPlanner::plan_regions`].
    pub fn plan_regions(
        &mut self,
        index: u64,
        pose: &PoseFrame,
        width: u32,
        height: u32,
    ) -> Vec<PlannedRegion> {
        self.planner.plan_regions(index, pose, width, height)
    }

    /// Details frame `index` in place, with its keypoints `pose` (in the pixels of the frame
    /// the pose was estimated on; scaled to `image`). Returns what was pasted.
    pub fn detail_frame(
        &mut self,
        index: u64,
        image: &mut RgbImage,
        pose: &PoseFrame,
    ) -> Result<Vec<DetailedRegion>, DetailError> {
        let (width, height) = image.dimensions();
        let regions = self.planner.frame_regions(index, pose, width, height)?;
        let mut done = Vec::with_capacity(regions.len());
        for region in regions {
            if let Some(mask) = self.detail_region(index, image, &region)? {
                done.push(DetailedRegion { region, mask });
            }
        }
        Ok(done)
    }

    /// Details one still image: a clip of one frame, tracks started afresh (so the same
    /// part gets the same seed in every image).
    pub fn detail_image(
        &mut self,
        image: &mut RgbImage,
        pose: &PoseFrame,
    ) -> Result<Vec<DetailedRegion>, DetailError> {
        self.reset();
        self.detail_frame(0, image, pose)
    }

    /// Details every frame of a batch in place (`inputs[i]` carries the keypoints of
    /// `outputs[i]`) and says what was repainted.
    pub fn detail_batch_report(
        &mut self,
        batch: &Batch,
        inputs: &[PreparedFrame],
        outputs: &mut [Frame],
    ) -> Result<BatchDetail, DetailError> {
        let mut report = BatchDetail::default();
        for (input, output) in inputs.iter().zip(outputs.iter_mut()) {
            if let Some(stop) = &self.stop {
                stop.check()?;
            }
            let index = input.source.index;
            let pose = frame_pose(input)?;
            let (w, h) = (output.width, output.height);
            let data = std::mem::take(&mut output.data);
            let mut image = RgbImage::from_raw(w, h, data).ok_or_else(|| {
                DetailError::SizeMismatch(format!("output frame {index} is not {w}x{h} RGB"))
            })?;
            let result = self.detail_frame(index, &mut image, pose);
            output.data = image.into_raw();
            for done in result? {
                report.regions.push(RegionReport::new(index, &done.region));
                report.inpainted += 1;
            }
        }
        self.planner.forget_unshared(batch, inputs);
        Ok(report)
    }

    fn detail_region(
        &mut self,
        index: u64,
        image: &mut RgbImage,
        region: &PlannedRegion,
    ) -> Result<Option<Mask>, DetailError> {
        let settings: &RegionSettings = self.planner.config.settings.for_kind(region.kind);
        let (frame_w, frame_h) = image.dimensions();
        let rect = region.rect;
        let Some((shape, mask)) = self.planner.region_mask(region, frame_w, frame_h) else {
            return Ok(None);
        };

        let multiple = self.inpainter.size_multiple();
        let (detail_w, detail_h) =
            detail_size(rect.width, rect.height, settings.resolution, multiple);
        let crop = imageops::crop_imm(image, rect.x, rect.y, rect.width, rect.height).to_image();
        let crop = resize(&crop, detail_w, detail_h);
        // Widen the repainted area by ~1.5 latent cells: the latent mask samples one pixel
        // per cell, and every pasted pixel must come from a repainted cell.
        let crop_per_detail =
            (rect.width as f32 / detail_w as f32).max(rect.height as f32 / detail_h as f32);
        let margin = 1.5 * multiple as f32 * crop_per_detail;
        let sd_mask = inpaint_mask(&shape, rect.width, rect.height, detail_w, detail_h, margin);
        let control = settings
            .controlnet
            .then(|| control_map(region.kind, &region.points, rect, detail_w, detail_h));

        let request = InpaintRequest {
            image: &crop,
            mask: &sd_mask,
            control: control.as_ref(),
            control_scale: settings.controlnet_scale,
            prompt: settings
                .prompt
                .as_deref()
                .unwrap_or(&self.planner.config.prompt),
            negative_prompt: settings
                .negative_prompt
                .as_deref()
                .unwrap_or(&self.planner.config.negative_prompt),
            denoise: settings.denoise,
            steps: settings.steps,
            cfg_scale: settings.cfg_scale,
            seed: region.seed,
        };
        let detailed =
            self.inpainter
                .inpaint(&request)
                .map_err(|source| DetailError::Generate {
                    frame: index,
                    kind: region.kind,
                    track: region.track_id,
                    source,
                })?;
        if detailed.dimensions() != (detail_w, detail_h) {
            return Err(DetailError::SizeMismatch(format!(
                "the detail pass returned {}x{} for a {detail_w}x{detail_h} crop",
                detailed.width(),
                detailed.height()
            )));
        }
        let back = resize(&detailed, rect.width, rect.height);
        feathered_paste(image, &back, rect, &mask)?;
        Ok(Some(mask))
    }
}

/// Lanczos3 resampling (none when the size already matches).
fn resize(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    if image.dimensions() == (width, height) {
        image.clone()
    } else {
        imageops::resize(image, width, height, imageops::FilterType::Lanczos3)
    }
}

/// The part's keypoints drawn as ControlNet's openpose annotator would draw them on the
/// crop, at the detail size.
pub fn control_map(
    kind: RegionKind,
    points: &[Keypoint],
    rect: PixelRect,
    width: u32,
    height: u32,
) -> RgbImage {
    let local: Vec<Keypoint> = points
        .iter()
        .map(|p| {
            if p.is_present() {
                Keypoint::new(p.x - rect.x as f32, p.y - rect.y as f32, p.confidence)
            } else {
                Keypoint::MISSING
            }
        })
        .collect();
    let array = |n: usize| -> Vec<Keypoint> {
        (0..n)
            .map(|i| local.get(i).copied().unwrap_or(Keypoint::MISSING))
            .collect()
    };
    let mut person = Person::default();
    match kind {
        RegionKind::Face => {
            let pts = array(70);
            person.face = Some(Face {
                points: std::array::from_fn(|i| pts[i]),
            });
        }
        RegionKind::LeftHand | RegionKind::RightHand => {
            let pts = array(21);
            let hand = Hand {
                points: std::array::from_fn(|i| pts[i]),
            };
            if kind == RegionKind::LeftHand {
                person.left_hand = Some(hand);
            } else {
                person.right_hand = Some(hand);
            }
        }
    }
    let crop_pose = PoseFrame {
        width: rect.width,
        height: rect.height,
        people: vec![person],
    };
    let parts = DrawParts {
        body: false,
        hands: kind.is_hand(),
        face: !kind.is_hand(),
    };
    draw_pose_map(&crop_pose, width, height, parts)
}

impl<I: RegionInpainter> Detailer for FaceHandDetailer<I> {
    fn name(&self) -> &str {
        "face-hands"
    }

    fn detail_batch(
        &mut self,
        batch: &Batch,
        inputs: &[PreparedFrame],
        outputs: &mut [Frame],
    ) -> Result<(), StageError> {
        self.detail_batch_report(batch, inputs, outputs)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::image_pipeline::ImagePipelineError;
    use crate::pipeline::plan::plan_batches;
    use std::sync::{Arc, Mutex};

    /// What a request asked for: seed, detail size, with a control image, prompt.
    type Call = (u64, (u32, u32), bool, String);

    /// Records requests and paints the repainted area with a colour made from the seed.
    #[derive(Clone, Default)]
    struct FakeInpainter {
        calls: Arc<Mutex<Vec<Call>>>,
        controlnet: bool,
    }

    fn seed_colour(seed: u64) -> [u8; 3] {
        [
            (seed >> 8) as u8 | 1,
            (seed >> 16) as u8 | 1,
            (seed >> 24) as u8 | 1,
        ]
    }

    impl RegionInpainter for FakeInpainter {
        fn inpaint(&mut self, r: &InpaintRequest) -> Result<RgbImage, Box<ImagePipelineError>> {
            self.calls.lock().unwrap().push((
                r.seed,
                r.image.dimensions(),
                r.control.is_some(),
                r.prompt.to_string(),
            ));
            let colour = seed_colour(r.seed);
            let mut out = r.image.clone();
            for (x, y, p) in out.enumerate_pixels_mut() {
                if r.mask.get_pixel(x, y)[0] == 255 {
                    *p = image::Rgb(colour);
                }
            }
            Ok(out)
        }

        fn has_controlnet(&self) -> bool {
            self.controlnet
        }

        fn size_multiple(&self) -> u32 {
            8
        }
    }

    fn kp(x: f32, y: f32) -> Keypoint {
        Keypoint::new(x, y, 1.0)
    }

    /// One person: a face around (cx, 40) and a right hand around (150, 100), in a
    /// 200 × 150 frame.
    fn pose(cx: f32) -> PoseFrame {
        let face = Face {
            points: std::array::from_fn(|i| {
                let a = i as f32 / 70.0 * std::f32::consts::TAU;
                kp(cx + 12.0 * a.cos(), 40.0 + 15.0 * a.sin())
            }),
        };
        let hand = Hand {
            points: std::array::from_fn(|i| {
                kp(150.0 + (i % 5) as f32 * 3.0, 100.0 + (i / 5) as f32 * 4.0)
            }),
        };
        PoseFrame {
            width: 200,
            height: 150,
            people: vec![Person {
                face: Some(face),
                right_hand: Some(hand),
                ..Default::default()
            }],
        }
    }

    fn config() -> DetailerConfig {
        let mut settings = DetailSettings::default();
        settings.face.enabled = true;
        settings.hands.enabled = true;
        settings.face.resolution = 64;
        settings.hands.resolution = 48;
        settings.face.feather = 4;
        settings.hands.feather = 3;
        settings.hands.prompt = Some("hands".into());
        DetailerConfig {
            settings,
            prompt: "preset prompt".into(),
            negative_prompt: String::new(),
            base_seed: 99,
            fps: 25.0,
        }
    }

    fn grey_frame() -> RgbImage {
        RgbImage::from_fn(200, 150, |x, y| {
            image::Rgb([(x % 251) as u8, (y % 241) as u8, 77])
        })
    }

    #[test]
    fn regions_are_detailed_with_their_settings_and_only_masked_pixels_change() {
        let fake = FakeInpainter {
            controlnet: true,
            ..Default::default()
        };
        let mut detailer = FaceHandDetailer::new(config(), fake.clone()).unwrap();
        let original = grey_frame();
        let mut image = original.clone();
        let done = detailer.detail_frame(0, &mut image, &pose(60.0)).unwrap();
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].region.kind, RegionKind::Face);
        assert_eq!(done[1].region.kind, RegionKind::RightHand);
        let calls = fake.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 2);
        // Face: 64 px long side, no ControlNet, the preset prompt; hand: 48 px, ControlNet.
        assert_eq!(calls[0].1 .0.max(calls[0].1 .1), 64);
        assert!(!calls[0].2 && calls[0].3 == "preset prompt");
        assert_eq!(calls[1].1 .0.max(calls[1].1 .1), 48);
        assert!(calls[1].2 && calls[1].3 == "hands");
        assert_eq!(calls[0].0, track_seed(99, done[0].region.track_id));

        let mut union = vec![false; 200 * 150];
        for d in &done {
            let r = d.region.rect;
            for y in 0..r.height {
                for x in 0..r.width {
                    if d.mask.get(x, y) > 0.0 {
                        union[((r.y + y) * 200 + r.x + x) as usize] = true;
                    }
                }
            }
        }
        let mut changed_inside = 0;
        for (x, y, p) in image.enumerate_pixels() {
            if union[(y * 200 + x) as usize] {
                changed_inside += (p != original.get_pixel(x, y)) as usize;
            } else {
                assert_eq!(
                    p,
                    original.get_pixel(x, y),
                    "({x}, {y}) outside the masks changed"
                );
            }
        }
        assert!(changed_inside > 100, "{changed_inside}");
    }

    #[test]
    fn the_controlnet_is_required_when_asked_for() {
        let err = FaceHandDetailer::new(config(), FakeInpainter::default())
            .err()
            .unwrap();
        assert!(matches!(
            err,
            DetailError::NoOpenposeControlNet { section: "hands" }
        ));
        let mut c = config();
        c.settings.hands.controlnet = false;
        assert!(FaceHandDetailer::new(c, FakeInpainter::default()).is_ok());
    }

    #[test]
    fn seeds_and_ids_stay_the_same_across_frames() {
        let fake = FakeInpainter {
            controlnet: true,
            ..Default::default()
        };
        let mut detailer = FaceHandDetailer::new(config(), fake.clone()).unwrap();
        let mut per_frame = Vec::new();
        for i in 0..6u64 {
            let mut image = grey_frame();
            let done = detailer
                .detail_frame(i, &mut image, &pose(60.0 + 2.0 * i as f32))
                .unwrap();
            per_frame.push(
                done.iter()
                    .map(|d| (d.region.track_id, d.region.seed))
                    .collect::<Vec<_>>(),
            );
        }
        assert!(
            per_frame.iter().all(|f| f == &per_frame[0]),
            "{per_frame:?}"
        );
        assert_ne!(per_frame[0][0].1, per_frame[0][1].1);
    }

    #[test]
    fn overlap_frames_reuse_their_regions_in_the_next_batch() {
        let fake = FakeInpainter {
            controlnet: true,
            ..Default::default()
        };
        let mut detailer = FaceHandDetailer::new(config(), fake.clone()).unwrap();
        let plan = plan_batches(10, 6, 2).unwrap();
        let frames: Vec<PreparedFrame> = (0..10u64)
            .map(|i| {
                let mut p = PreparedFrame::new(Frame::from_rgb_image(i, grey_frame()));
                // The face jumps around: tracking it again would give other boxes.
                p.annotations
                    .insert(pose(60.0 + if i % 2 == 0 { 0.0 } else { 9.0 }));
                p
            })
            .collect();
        let mut rendered: BTreeMap<u64, Vec<Frame>> = BTreeMap::new();
        for batch in &plan.batches {
            let inputs = &frames[batch.start..batch.end];
            let mut outputs: Vec<Frame> = inputs.iter().map(|p| p.source.clone()).collect();
            detailer.detail_batch(batch, inputs, &mut outputs).unwrap();
            for o in outputs {
                rendered.entry(o.index).or_default().push(o);
            }
        }
        // Frames 4 and 5 were detailed by both batches, identically.
        for i in [4, 5] {
            assert_eq!(rendered[&i].len(), 2);
            assert_eq!(rendered[&i][0], rendered[&i][1], "frame {i}");
        }
        // 10 distinct frames × 2 regions tracked, 12 frame renders × 2 regions painted.
        assert_eq!(fake.calls.lock().unwrap().len(), 24);
        assert!(detailer.planner.planned.len() <= 2);
    }

    /// Frames whose face jumps around (tracking them again would give other boxes).
    fn jumpy_frames(n: u64) -> Vec<PreparedFrame> {
        (0..n)
            .map(|i| {
                let mut p = PreparedFrame::new(Frame::from_rgb_image(i, grey_frame()));
                p.annotations
                    .insert(pose(50.0 + (i % 3) as f32 * 7.0 + i as f32));
                p
            })
            .collect()
    }

    #[test]
    fn tracking_finished_batches_then_detailing_equals_detailing_everything() {
        let plan = plan_batches(14, 6, 2).unwrap();
        let frames = jumpy_frames(14);
        let run = |tracked_only: usize| {
            let fake = FakeInpainter {
                controlnet: true,
                ..Default::default()
            };
            let mut planner = RegionPlanner::new(config());
            let mut reports = Vec::new();
            for batch in &plan.batches[..tracked_only] {
                let inputs = &frames[batch.start..batch.end];
                reports.push(planner.track_batch(batch, inputs, (200, 150)).unwrap());
            }
            let mut detailer = FaceHandDetailer::from_planner(planner, fake.clone()).unwrap();
            let mut outputs = Vec::new();
            for batch in &plan.batches[tracked_only..] {
                let inputs = &frames[batch.start..batch.end];
                let mut out: Vec<Frame> = inputs.iter().map(|p| p.source.clone()).collect();
                reports.push(
                    detailer
                        .detail_batch_report(batch, inputs, &mut out)
                        .unwrap(),
                );
                outputs.push(out);
            }
            let calls = fake.calls.lock().unwrap().len();
            (reports, outputs, calls)
        };
        let (all_reports, all_outputs, all_calls) = run(0);
        let (resumed_reports, resumed_outputs, resumed_calls) = run(2);
        assert_eq!(plan.batches.len(), 3);
        // The last batch is painted identically, with the same regions and seeds.
        assert_eq!(resumed_outputs.last(), all_outputs.last());
        assert_eq!(resumed_reports.last(), all_reports.last());
        // Tracked batches report the regions a detail pass would paint, but paint none.
        for k in 0..2 {
            assert_eq!(
                resumed_reports[k].regions, all_reports[k].regions,
                "batch {k}"
            );
            assert_eq!(resumed_reports[k].inpainted, 0);
            assert_eq!(all_reports[k].inpainted, all_reports[k].regions.len());
        }
        let last = plan.batches.last().unwrap();
        assert_eq!(resumed_calls, 2 * last.len());
        assert!(all_calls > resumed_calls);
    }

    #[test]
    fn a_stop_request_stops_detailing_between_frames() {
        let fake = FakeInpainter {
            controlnet: true,
            ..Default::default()
        };
        let stop = StopFlag::new();
        let mut detailer = FaceHandDetailer::new(config(), fake.clone())
            .unwrap()
            .with_stop_flag(stop.clone());
        let plan = plan_batches(4, 4, 0).unwrap();
        let inputs = jumpy_frames(4);
        let mut outputs: Vec<Frame> = inputs.iter().map(|p| p.source.clone()).collect();
        stop.request();
        let err = detailer
            .detail_batch_report(&plan.batches[0], &inputs, &mut outputs)
            .unwrap_err();
        assert!(crate::cancel::is_interrupted(&err), "{err}");
        assert!(fake.calls.lock().unwrap().is_empty());
    }

    #[test]
    fn frames_without_keypoints_are_an_error_naming_the_frame() {
        let fake = FakeInpainter {
            controlnet: true,
            ..Default::default()
        };
        let mut detailer = FaceHandDetailer::new(config(), fake).unwrap();
        let plan = plan_batches(1, 1, 0).unwrap();
        let inputs = [PreparedFrame::new(Frame::from_rgb_image(7, grey_frame()))];
        let mut outputs = vec![inputs[0].source.clone()];
        let err = detailer
            .detail_batch(&plan.batches[0], &inputs, &mut outputs)
            .unwrap_err();
        assert!(err.to_string().contains("frame 7"), "{err}");
        // The output frame is left whole.
        assert_eq!(outputs[0], inputs[0].source);
    }

    #[test]
    fn keypoints_scale_to_the_rendered_size() {
        let fake = FakeInpainter {
            controlnet: true,
            ..Default::default()
        };
        let mut detailer = FaceHandDetailer::new(config(), fake).unwrap();
        // Rendered at half the pose's size.
        let regions = detailer.plan_regions(0, &pose(60.0), 100, 75);
        let face = &regions[0];
        assert!(face
            .points
            .iter()
            .all(|p| (p.x - 30.0).abs() <= 6.01 && (p.y - 20.0).abs() <= 7.51));
        let r = face.rect;
        assert!(r.right() <= 100 && r.bottom() <= 75);
    }

    #[test]
    fn hand_control_map_draws_the_hand_in_crop_coordinates() {
        let hand: Vec<Keypoint> = (0..21)
            .map(|i| kp(110.0 + (i % 5) as f32 * 4.0, 210.0 + (i / 5) as f32 * 5.0))
            .collect();
        let rect = PixelRect {
            x: 100,
            y: 200,
            width: 40,
            height: 40,
        };
        let map = control_map(RegionKind::RightHand, &hand, rect, 80, 80);
        assert_eq!(map.dimensions(), (80, 80));
        // Wrist (110, 210) → crop (10, 10) → ×2 = (20, 20): a blue joint disc.
        assert_eq!(map.get_pixel(20, 20).0, [0, 0, 255]);
        // Nothing is drawn far from the hand.
        assert_eq!(map.get_pixel(75, 5).0, [0, 0, 0]);
        // Points outside the crop do not panic.
        let far: Vec<Keypoint> = (0..21)
            .map(|i| kp(90.0 + i as f32 * 5.0, 195.0 + i as f32 * 3.0))
            .collect();
        let _ = control_map(RegionKind::LeftHand, &far, rect, 80, 80);
        let face: Vec<Keypoint> = (0..70).map(|i| kp(120.0, 220.0 + (i % 3) as f32)).collect();
        let map = control_map(RegionKind::Face, &face, rect, 40, 40);
        assert_eq!(map.get_pixel(20, 20).0, [255, 255, 255]);
    }
}
