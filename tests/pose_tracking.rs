//! Video-mode tracking on a moving real photo: keypoints follow the motion, detectors run
//! only when tracking is lost.
//!
//! The "video" is scikit-image's astronaut.png moved by a known similarity transform per frame
//! (shift + zoom about the centre), so the true position of every hand-checked point is known
//! in every frame (see tests/pose_photo.rs for how the base positions were checked).

mod models_common;

use std::sync::Arc;

use image::{Rgb, RgbImage};
use rotoscope::preprocess::openpose::keypoints::{BodyPart, Keypoint};
use rotoscope::preprocess::pose::{PoseEstimator, PoseSettings, PoseTracker};

use models_common::{models_dir, require};

/// Frame `t`: the photo zoomed by `scale` about its centre, then shifted by `(dx, dy)`;
/// outside the photo the nearest edge pixel.
struct Motion {
    scale: f32,
    dx: f32,
    dy: f32,
}

impl Motion {
    fn at(t: usize) -> Motion {
        let t = t as f32;
        Motion {
            scale: 1.0 - 0.012 * t,
            dx: 4.0 * t,
            dy: -2.0 * t,
        }
    }

    fn apply(&self, p: (f32, f32)) -> (f32, f32) {
        (
            (p.0 - 256.0) * self.scale + 256.0 + self.dx,
            (p.1 - 256.0) * self.scale + 256.0 + self.dy,
        )
    }

    fn render(&self, src: &RgbImage) -> RgbImage {
        let (w, h) = src.dimensions();
        RgbImage::from_fn(w, h, |x, y| {
            let sx = (x as f32 - 256.0 - self.dx) / self.scale + 256.0;
            let sy = (y as f32 - 256.0 - self.dy) / self.scale + 256.0;
            bilinear(src, sx, sy)
        })
    }
}

fn bilinear(img: &RgbImage, x: f32, y: f32) -> Rgb<u8> {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let at = |xi: i64, yi: i64| {
        img.get_pixel(xi.clamp(0, w - 1) as u32, yi.clamp(0, h - 1) as u32)
            .0
    };
    let (x0, y0) = (x0 as i64, y0 as i64);
    let (a, b, c, d) = (
        at(x0, y0),
        at(x0 + 1, y0),
        at(x0, y0 + 1),
        at(x0 + 1, y0 + 1),
    );
    Rgb(std::array::from_fn(|k| {
        let top = a[k] as f32 + (b[k] as f32 - a[k] as f32) * fx;
        let bottom = c[k] as f32 + (d[k] as f32 - c[k] as f32) * fx;
        (top + (bottom - top) * fy).round() as u8
    }))
}

/// Hand-checked positions on the original photo (tests/pose_photo.rs).
const BODY: [(BodyPart, (f32, f32)); 6] = [
    (BodyPart::Nose, (225.0, 126.0)),
    (BodyPart::REye, (203.0, 101.0)),
    (BodyPart::LEye, (246.0, 103.0)),
    (BodyPart::RShoulder, (100.0, 250.0)),
    (BodyPart::LShoulder, (315.0, 260.0)),
    (BodyPart::Neck, (207.0, 255.0)),
];
const FACE: [(usize, (f32, f32)); 4] = [
    (8, (226.0, 178.0)),
    (48, (203.0, 141.0)),
    (54, (244.0, 141.0)),
    (68, (203.0, 101.0)),
];
const TOL: f32 = 0.05 * 512.0;

fn dist(p: Keypoint, q: (f32, f32)) -> f32 {
    ((p.x - q.0).powi(2) + (p.y - q.1).powi(2)).sqrt()
}

#[test]
fn tracked_keypoints_follow_motion_and_skip_detection() {
    let photo = image::open(require(models_dir().join("photos/astronaut.png")))
        .unwrap()
        .to_rgb8();
    let dir = require(models_dir().join("mediapipe"));
    let est = PoseEstimator::new(&dir, &PoseSettings::default()).unwrap();
    let mut tracker = PoseTracker::new(Arc::new(est), 25.0);

    const FRAMES: usize = 12;
    for t in 0..FRAMES {
        let motion = Motion::at(t);
        let frame = tracker.next(&motion.render(&photo)).unwrap();
        assert_eq!(frame.people.len(), 1, "frame {t}: one person");
        let person = &frame.people[0];
        let body = person.body.expect("body");
        let face = person.face.expect("face");
        let mut worst = 0.0f32;
        for (part, base) in BODY {
            let d = dist(body.get(part), motion.apply(base));
            worst = worst.max(d);
            assert!(
                d <= TOL,
                "frame {t}: {part:?} {d:.1} px from the moved hand-checked point"
            );
        }
        for (i, base) in FACE {
            let d = dist(face.points[i], motion.apply(base));
            worst = worst.max(d);
            assert!(
                d <= TOL,
                "frame {t}: face point {i} {d:.1} px from the moved point"
            );
        }
        println!("frame {t}: worst error {worst:.1} px");
    }
    // The nose really moved: 44 px right and 22 px up over the clip, plus the zoom.
    let stats = tracker.stats();
    println!("{stats:?}");
    assert_eq!(stats.frames, FRAMES as u64);
    // Person and face detectors run on the first frame only; later frames reuse the ROI
    // predicted from the previous frame's landmarks.
    assert_eq!(stats.person_detections, 1);
    assert_eq!(stats.face_detections, 1);
    assert_eq!(stats.body_landmark_runs, FRAMES as u64);
    assert_eq!(stats.face_landmark_runs, FRAMES as u64);
}

#[test]
fn lost_person_is_redetected() {
    let photo = image::open(require(models_dir().join("photos/astronaut.png")))
        .unwrap()
        .to_rgb8();
    let dir = require(models_dir().join("mediapipe"));
    let settings = PoseSettings {
        hands: false,
        ..PoseSettings::default()
    };
    let est = PoseEstimator::new(&dir, &settings).unwrap();
    let mut tracker = PoseTracker::new(Arc::new(est), 25.0);
    let grey = RgbImage::from_pixel(512, 512, Rgb([120, 120, 120]));

    let frames = [&photo, &photo, &grey, &photo, &photo];
    let found: Vec<bool> = frames
        .iter()
        .map(|img| !tracker.next(img).unwrap().people.is_empty())
        .collect();
    assert_eq!(found, [true, true, false, true, true]);
    let stats = tracker.stats();
    // Frame 0 detects; frame 2's tracked ROI finds nobody, so the detector runs (and fails);
    // frame 3 has no track and detects again; frames 1 and 4 track.
    assert_eq!(stats.person_detections, 3, "{stats:?}");
    assert_eq!(stats.face_detections, 2, "{stats:?}");

    // Forced re-detection every 2 frames.
    let settings = PoseSettings {
        hands: false,
        face: false,
        redetect_every: 2,
        ..PoseSettings::default()
    };
    let est = PoseEstimator::new(&dir, &settings).unwrap();
    let mut tracker = PoseTracker::new(Arc::new(est), 25.0);
    for _ in 0..4 {
        assert_eq!(tracker.next(&photo).unwrap().people.len(), 1);
    }
    assert_eq!(tracker.stats().person_detections, 2);
}
