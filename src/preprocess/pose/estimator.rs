//! The pose estimator: person detection → body landmarks → hand and face regions from the
//! body (MediaPipe Holistic's order, `modules/holistic_landmark/holistic_landmark_cpu.pbtxt`)
//! → OpenPose keypoints. [`PoseEstimator::estimate`] treats an image on its own;
//! [`PoseTracker`] processes a video's frames in order, reusing each part's ROI from the
//! previous frame's landmarks and smoothing keypoints over time.
//!
//! Where this departs from Holistic, and why:
//! * hands: Holistic refines the pose-derived hand region with `hand_recrop.tflite`, which
//!   the packaged model set does not include; here the palm detector runs inside that region
//!   instead (`palm_detection_detection_to_roi` gives an equally tight, rotated hand ROI), and
//!   the pose-derived region is used directly when no palm is found;
//! * a tracked part whose presence drops is re-detected on the *same* frame (MediaPipe only
//!   re-detects on the next one), so no frame loses a part that a detector would find;
//! * single person, like Holistic: the best person detection is tracked.

use std::path::Path;
use std::sync::Arc;

use image::RgbImage;

use super::body::{BodyLandmarker, BodyLandmarks};
use super::detector::{Detector, DetectorKind};
use super::face::{FaceLandmarker, FaceLandmarks};
use super::hands::{HandLandmarker, HandLandmarks};
use super::roi::{self, NormPoint, NormRect};
use super::smoothing::KeypointSmoother;
use super::tracker::{hand_matches_body, PartTrack, TrackState, TrackingStats};
use super::{NormLandmark, PoseError};
use crate::preprocess::openpose::keypoints::{
    blazepose, body_from_blazepose, face_from_mesh, hand_from_mediapipe, Landmark, Person,
    PoseFrame, BLAZEPOSE_POINTS,
};
use crate::preset::pose::PoseSettings;

/// Holistic's `hand_visibility_from_hand_landmarks_from_pose.pbtxt`: look for a hand only
/// when the body's wrist is at least this visible.
const WRIST_VISIBILITY_FOR_HAND: f32 = 0.1;

/// The models for the enabled parts.
pub struct PoseEstimator {
    settings: PoseSettings,
    person_detector: Detector,
    body: BodyLandmarker,
    hands: Option<(Detector, HandLandmarker)>,
    face: Option<(Detector, FaceLandmarker)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Left,
    Right,
}

/// Raw results of one frame, image-normalised.
struct FrameLandmarks {
    body: BodyLandmarks,
    left_hand: Option<HandLandmarks>,
    right_hand: Option<HandLandmarks>,
    face: Option<FaceLandmarks>,
}

impl PoseEstimator {
    /// Loads the models from `models_dir` (MediaPipe `.tflite` files; `scripts/fetch-models.sh`
    /// installs them in `$ROTOSCOPE_MODELS/mediapipe`).
    pub fn new(models_dir: &Path, settings: &PoseSettings) -> Result<Self, PoseError> {
        settings.validate()?;
        let mut needed = vec![DetectorKind::Person.file_name(), super::body::MODEL_FILE];
        if settings.hands {
            needed.extend([DetectorKind::Palm.file_name(), super::hands::MODEL_FILE]);
        }
        if settings.face {
            needed.extend([DetectorKind::Face.file_name(), super::face::MODEL_FILE]);
        }
        let missing: Vec<String> = needed
            .iter()
            .filter(|f| !models_dir.join(f).is_file())
            .map(|f| f.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(PoseError::MissingModels {
                dir: models_dir.to_path_buf(),
                files: missing,
            });
        }
        let hands = if settings.hands {
            Some((
                Detector::load(models_dir, DetectorKind::Palm)?,
                HandLandmarker::load(models_dir)?,
            ))
        } else {
            None
        };
        let face = if settings.face {
            Some((
                Detector::load(models_dir, DetectorKind::Face)?,
                FaceLandmarker::load(models_dir)?,
            ))
        } else {
            None
        };
        Ok(PoseEstimator {
            settings: settings.clone(),
            person_detector: Detector::load(models_dir, DetectorKind::Person)?,
            body: BodyLandmarker::load(models_dir)?,
            hands,
            face,
        })
    }

    pub fn settings(&self) -> &PoseSettings {
        &self.settings
    }

    /// Keypoints of one image on its own (every part detected afresh, no smoothing).
    pub fn estimate(&self, image: &RgbImage) -> Result<PoseFrame, PoseError> {
        let mut state = TrackState::default();
        let mut stats = TrackingStats::default();
        let found = self.process(image, &mut state, &mut stats)?;
        Ok(self.to_pose_frame(image.dimensions(), found))
    }

    /// Runs the pipeline on one frame, updating the tracks (on rayon's pool: see
    /// [`crate::pool`]).
    fn process(
        &self,
        image: &RgbImage,
        state: &mut TrackState,
        stats: &mut TrackingStats,
    ) -> Result<Option<FrameLandmarks>, PoseError> {
        crate::pool::on_worker(|| self.process_on_worker(image, state, stats))
    }

    fn process_on_worker(
        &self,
        image: &RgbImage,
        state: &mut TrackState,
        stats: &mut TrackingStats,
    ) -> Result<Option<FrameLandmarks>, PoseError> {
        stats.frames += 1;
        let size = image.dimensions();
        let threshold = self.settings.redetect_below;
        let every = self.settings.redetect_every;

        // Body: tracked ROI, or (again, if tracking failed) the person detector.
        let mut body = None;
        let mut detected = false;
        if let Some(roi) = state.body.tracked_roi(every) {
            stats.body_landmark_runs += 1;
            let b = self.body.run(image, &roi)?;
            if b.presence >= threshold {
                body = Some(b);
            }
        }
        if body.is_none() {
            detected = true;
            stats.person_detections += 1;
            let best = self.person_detector.detect(image, None)?.into_iter().next();
            if let Some(d) = best {
                let roi = roi::pose_detection_to_roi(&d, size);
                stats.body_landmark_runs += 1;
                let b = self.body.run(image, &roi)?;
                if b.presence >= threshold {
                    body = Some(b);
                }
            }
        }
        let Some(body) = body else {
            state.reset();
            return Ok(None);
        };
        state.body.update(
            Some(roi::pose_landmarks_to_roi(&body.auxiliary, size)),
            detected,
        );
        if detected {
            // A (re)detected person: look for the hands right away.
            state.left_hand.search_now();
            state.right_hand.search_now();
        }

        // The hands and the face only depend on the body: run them side by side.
        let TrackState {
            left_hand: left_track,
            right_hand: right_track,
            face: face_track,
            ..
        } = state;
        let mut left_stats = TrackingStats::default();
        let mut right_stats = TrackingStats::default();
        let mut face_stats = TrackingStats::default();
        let hand = |side, track: &mut PartTrack, stats: &mut TrackingStats| match &self.hands {
            Some((palm, model)) => self.track_hand(image, &body, side, track, palm, model, stats),
            None => Ok(None),
        };
        let ((left_hand, right_hand), face) = rayon::join(
            || {
                rayon::join(
                    || hand(Side::Left, left_track, &mut left_stats),
                    || hand(Side::Right, right_track, &mut right_stats),
                )
            },
            || match &self.face {
                Some((detector, model)) => {
                    self.track_face(image, &body, face_track, detector, model, &mut face_stats)
                }
                None => Ok(None),
            },
        );
        for part in [left_stats, right_stats, face_stats] {
            stats.add(&part);
        }
        let (left_hand, right_hand, face) = (left_hand?, right_hand?, face?);
        Ok(Some(FrameLandmarks {
            body,
            left_hand,
            right_hand,
            face,
        }))
    }

    #[allow(clippy::too_many_arguments)]
    fn track_hand(
        &self,
        image: &RgbImage,
        body: &BodyLandmarks,
        side: Side,
        track: &mut PartTrack,
        palm: &Detector,
        model: &HandLandmarker,
        stats: &mut TrackingStats,
    ) -> Result<Option<HandLandmarks>, PoseError> {
        let size = image.dimensions();
        let (wrist, pinky, index) = match side {
            Side::Left => (
                blazepose::LEFT_WRIST,
                blazepose::LEFT_PINKY,
                blazepose::LEFT_INDEX,
            ),
            Side::Right => (
                blazepose::RIGHT_WRIST,
                blazepose::RIGHT_PINKY,
                blazepose::RIGHT_INDEX,
            ),
        };
        let point = |i: usize| (body.landmarks[i].x, body.landmarks[i].y);
        let threshold = self.settings.redetect_below;
        let accept = |h: &HandLandmarks, roi: &NormRect| {
            h.presence >= threshold
                && hand_matches_body(point_of(&h.landmarks[0]), point(wrist), roi, size)
        };

        if let Some(roi) = track.tracked_roi(self.settings.redetect_every) {
            stats.hand_landmark_runs += 1;
            let h = model.run(image, &roi)?;
            if accept(&h, &roi) {
                track.update(Some(hand_next_roi(&h, size)), false);
                return Ok(Some(h));
            }
        }
        if body.landmarks[wrist].score < WRIST_VISIBILITY_FOR_HAND
            || !track.should_search(self.settings.hand_search_every)
        {
            track.update(None, false);
            return Ok(None);
        }
        let from_pose = roi::hand_roi_from_pose(point(wrist), point(pinky), point(index), size);
        stats.palm_detections += 1;
        let roi = match palm.detect(image, Some(&from_pose))?.first() {
            Some(d) => roi::palm_detection_to_roi(d, size),
            None => from_pose,
        };
        stats.hand_landmark_runs += 1;
        let h = model.run(image, &roi)?;
        if accept(&h, &roi) {
            track.update(Some(hand_next_roi(&h, size)), true);
            Ok(Some(h))
        } else {
            track.update(None, true);
            Ok(None)
        }
    }

    fn track_face(
        &self,
        image: &RgbImage,
        body: &BodyLandmarks,
        track: &mut PartTrack,
        detector: &Detector,
        model: &FaceLandmarker,
        stats: &mut TrackingStats,
    ) -> Result<Option<FaceLandmarks>, PoseError> {
        let size = image.dimensions();
        let threshold = self.settings.redetect_below;
        if let Some(roi) = track.tracked_roi(self.settings.redetect_every) {
            stats.face_landmark_runs += 1;
            let f = model.run(image, &roi)?;
            if f.presence >= threshold {
                track.update(Some(face_next_roi(&f, size)), false);
                return Ok(Some(f));
            }
        }
        let pose_face: [NormPoint; 11] = std::array::from_fn(|i| point_of(&body.landmarks[i]));
        let from_pose = roi::face_roi_from_pose(&pose_face, size);
        stats.face_detections += 1;
        let Some(d) = detector.detect(image, Some(&from_pose))?.into_iter().next() else {
            track.update(None, true);
            return Ok(None);
        };
        let roi = roi::face_detection_to_roi(&d, size);
        stats.face_landmark_runs += 1;
        let f = model.run(image, &roi)?;
        if f.presence >= threshold {
            track.update(Some(face_next_roi(&f, size)), true);
            Ok(Some(f))
        } else {
            track.update(None, true);
            Ok(None)
        }
    }

    /// Converts to OpenPose keypoints in pixels, keeping points at or above `min_confidence`.
    fn to_pose_frame(&self, size: (u32, u32), found: Option<FrameLandmarks>) -> PoseFrame {
        let mut frame = PoseFrame::empty(size.0, size.1);
        let Some(found) = found else {
            return frame;
        };
        let (w, h) = (size.0 as f32, size.1 as f32);
        let px = |l: &NormLandmark| Landmark {
            x: l.x * w,
            y: l.y * h,
            score: l.score,
        };
        let min = self.settings.min_confidence;
        let blaze: [Landmark; BLAZEPOSE_POINTS] = found.body.landmarks.each_ref().map(px);
        let body = body_from_blazepose(&blaze, min);
        let hand = |hl: &Option<HandLandmarks>| {
            hl.as_ref()
                .map(|hl| hand_from_mediapipe(&hl.landmarks.each_ref().map(px), min))
        };
        let face = found.face.as_ref().and_then(|f| {
            let mesh: Vec<Landmark> = f.landmarks.iter().map(px).collect();
            face_from_mesh(&mesh, min)
        });
        frame.people.push(Person {
            body: self.settings.body.then_some(body),
            left_hand: hand(&found.left_hand),
            right_hand: hand(&found.right_hand),
            face,
        });
        frame
    }
}

fn point_of(l: &NormLandmark) -> NormPoint {
    (l.x, l.y)
}

fn hand_next_roi(h: &HandLandmarks, size: (u32, u32)) -> NormRect {
    let pts: Vec<NormPoint> = h.landmarks.iter().map(point_of).collect();
    roi::hand_landmarks_to_roi(&pts, size)
}

fn face_next_roi(f: &FaceLandmarks, size: (u32, u32)) -> NormRect {
    let pts: Vec<NormPoint> = f.landmarks.iter().map(point_of).collect();
    roi::face_landmarks_to_roi(&pts, size)
}

/// Video-mode estimation: call [`PoseTracker::next`] with the frames in order.
pub struct PoseTracker {
    estimator: Arc<PoseEstimator>,
    state: TrackState,
    stats: TrackingStats,
    fps: f64,
    frame: u64,
    /// Body, left hand, right hand, face.
    smoothers: [KeypointSmoother; 4],
}

impl PoseTracker {
    /// A tracker for a video at `fps` frames per second (the rate the smoothing assumes).
    pub fn new(estimator: Arc<PoseEstimator>, fps: f64) -> Self {
        let params = estimator.settings.smoothing.params();
        let smoother = || KeypointSmoother::new(params, fps);
        PoseTracker {
            estimator,
            state: TrackState::default(),
            stats: TrackingStats::default(),
            fps,
            frame: 0,
            smoothers: [smoother(), smoother(), smoother(), smoother()],
        }
    }

    pub fn estimator(&self) -> &PoseEstimator {
        &self.estimator
    }

    /// Forgets tracks and smoothing history (the next frame does not follow the last one).
    pub fn reset(&mut self) {
        self.state.reset();
        for s in &mut self.smoothers {
            s.reset();
        }
    }

    /// Keypoints of the next frame.
    pub fn next(&mut self, image: &RgbImage) -> Result<PoseFrame, PoseError> {
        let found = self
            .estimator
            .process(image, &mut self.state, &mut self.stats)?;
        let mut frame = self.estimator.to_pose_frame(image.dimensions(), found);
        let time = self.frame as f64 / self.fps;
        self.frame += 1;
        if self.estimator.settings.smoothing.enabled {
            self.smooth(time, &mut frame);
        }
        Ok(frame)
    }

    fn smooth(&mut self, time: f64, frame: &mut PoseFrame) {
        let [body_s, left_s, right_s, face_s] = &mut self.smoothers;
        let Some(person) = frame.people.first_mut() else {
            for s in [body_s, left_s, right_s, face_s] {
                s.reset();
            }
            return;
        };
        match &mut person.body {
            Some(b) => body_s.smooth(time, &mut b.points),
            None => body_s.reset(),
        }
        match &mut person.left_hand {
            Some(h) => left_s.smooth(time, &mut h.points),
            None => left_s.reset(),
        }
        match &mut person.right_hand {
            Some(h) => right_s.smooth(time, &mut h.points),
            None => right_s.reset(),
        }
        match &mut person.face {
            Some(f) => face_s.smooth(time, &mut f.points),
            None => face_s.reset(),
        }
    }

    /// How often each model ran so far.
    pub fn stats(&self) -> TrackingStats {
        self.stats
    }
}
