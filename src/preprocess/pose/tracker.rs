//! Video-mode tracking state: for each part (body, two hands, face) the ROI predicted from
//! the previous frame's landmarks, and when to give it up and detect again.
//!
//! MediaPipe's graphs do this with a `PreviousLoopbackCalculator` feeding the landmarks-derived
//! ROI back (`pose_landmark_cpu.pbtxt`: detection runs only while there is no previous ROI;
//! holistic's `hand_tracking.pbtxt` / `face_tracking.pbtxt` additionally compare with a fresh
//! re-crop every frame). Here the ROI is kept while the landmark model's presence score stays
//! at or above `redetect_below`, optionally forcing a detection every `redetect_every` frames;
//! a hand whose wrist strays from the body's wrist is also dropped (it has jumped to the
//! other hand or to a hand-like object).

use super::roi::{NormPoint, NormRect};

/// Tracking state of one part.
#[derive(Debug, Clone, Default)]
pub struct PartTrack {
    roi: Option<NormRect>,
    /// Frames since this part was last found by a detector.
    since_detection: u32,
    /// Frames since this part was lost (0 while tracked or before the first search).
    lost_frames: u32,
}

impl PartTrack {
    /// The ROI to reuse on this frame, or `None` when the part must be detected.
    pub fn tracked_roi(&self, redetect_every: u32) -> Option<NormRect> {
        if redetect_every > 0 && self.since_detection + 1 >= redetect_every {
            return None;
        }
        self.roi
    }

    /// Records the outcome of this frame: `next_roi` from the landmarks if the part was found
    /// (`detected` when a detector ran for it), `None` if it was lost.
    pub fn update(&mut self, next_roi: Option<NormRect>, detected: bool) {
        self.roi = next_roi;
        self.lost_frames = if next_roi.is_some() {
            0
        } else {
            self.lost_frames + 1
        };
        self.since_detection = if detected || next_roi.is_none() {
            0
        } else {
            self.since_detection + 1
        };
    }

    pub fn is_tracking(&self) -> bool {
        self.roi.is_some()
    }

    /// While lost, whether to search on this frame: on the first frame after losing it and
    /// then every `every` frames (`every` ≤ 1: every frame).
    pub fn should_search(&self, every: u32) -> bool {
        every <= 1 || self.lost_frames.is_multiple_of(every)
    }

    /// Search on the next frame whatever the interval (the person was just re-detected).
    pub fn search_now(&mut self) {
        self.lost_frames = 0;
    }
}

/// Tracks of all parts of the (single) person.
#[derive(Debug, Clone, Default)]
pub struct TrackState {
    pub body: PartTrack,
    pub left_hand: PartTrack,
    pub right_hand: PartTrack,
    pub face: PartTrack,
}

impl TrackState {
    /// Forgets everything (the person is gone).
    pub fn reset(&mut self) {
        *self = TrackState::default();
    }
}

/// How often each model ran; tracking shows as detections ≪ frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackingStats {
    pub frames: u64,
    pub person_detections: u64,
    pub palm_detections: u64,
    pub face_detections: u64,
    pub body_landmark_runs: u64,
    pub hand_landmark_runs: u64,
    pub face_landmark_runs: u64,
}

impl TrackingStats {
    /// Adds another set of counts (from parts processed in parallel).
    pub fn add(&mut self, other: &TrackingStats) {
        self.frames += other.frames;
        self.person_detections += other.person_detections;
        self.palm_detections += other.palm_detections;
        self.face_detections += other.face_detections;
        self.body_landmark_runs += other.body_landmark_runs;
        self.hand_landmark_runs += other.hand_landmark_runs;
        self.face_landmark_runs += other.face_landmark_runs;
    }
}

/// Whether a tracked hand still belongs to the body's wrist: its wrist landmark must lie
/// within one hand-ROI width of the body's wrist (both image-normalised; `size` in pixels).
pub fn hand_matches_body(
    hand_wrist: NormPoint,
    body_wrist: NormPoint,
    hand_roi: &NormRect,
    size: (u32, u32),
) -> bool {
    let (w, h) = (size.0 as f32, size.1 as f32);
    let dx = (hand_wrist.0 - body_wrist.0) * w;
    let dy = (hand_wrist.1 - body_wrist.1) * h;
    let roi_side = hand_roi.width * w;
    (dx * dx + dy * dy).sqrt() <= roi_side
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(x: f32) -> NormRect {
        NormRect {
            x_center: x,
            y_center: 0.5,
            width: 0.2,
            height: 0.2,
            rotation: 0.0,
        }
    }

    #[test]
    fn tracks_until_lost_then_detects() {
        let mut t = PartTrack::default();
        assert_eq!(t.tracked_roi(0), None);
        t.update(Some(rect(0.3)), true);
        assert_eq!(t.tracked_roi(0), Some(rect(0.3)));
        for i in 0..50 {
            t.update(Some(rect(0.3 + i as f32 * 0.001)), false);
            assert!(t.tracked_roi(0).is_some());
        }
        t.update(None, false);
        assert_eq!(t.tracked_roi(0), None);
        assert!(!t.is_tracking());
    }

    #[test]
    fn redetect_every_forces_periodic_detection() {
        let mut t = PartTrack::default();
        t.update(Some(rect(0.5)), true); // frame 0: detected
        let mut detections = 1;
        for _ in 1..12 {
            let detected = t.tracked_roi(4).is_none();
            detections += detected as u32;
            t.update(Some(rect(0.5)), detected);
        }
        // Frames 0, 4, 8 detect.
        assert_eq!(detections, 3);
    }

    #[test]
    fn lost_part_is_searched_every_n_frames() {
        let mut t = PartTrack::default();
        let mut searched = vec![];
        for frame in 0..9 {
            let search = t.should_search(4);
            searched.push(search);
            t.update(None, search);
            if frame == 5 {
                t.search_now();
            }
        }
        assert_eq!(
            searched,
            [true, false, false, false, true, false, true, false, false]
        );
        // Found again: tracking, and a later loss searches at once.
        t.update(Some(rect(0.5)), true);
        assert!(t.should_search(4));
    }

    #[test]
    fn hand_must_stay_near_body_wrist() {
        let roi = rect(0.5);
        assert!(hand_matches_body(
            (0.5, 0.5),
            (0.55, 0.55),
            &roi,
            (100, 100)
        ));
        assert!(!hand_matches_body((0.5, 0.5), (0.8, 0.5), &roi, (100, 100)));
    }
}
