//! Keypoints on a real photograph land on the right body parts.
//!
//! Photo: scikit-image's `astronaut.png` (Eileen Collins, NASA, public domain; 512 × 512),
//! installed with the MediaPipe models by `scripts/fetch-models.sh`.
//!
//! The expected positions below were HAND-CHECKED: I opened the photo zoomed 5× (face) and
//! 2–4× (body) with a 10/25-px grid drawn on it and read off each point. Joints hidden in the
//! pressure suit (shoulders, elbow) are the centre of where the joint must be from the suit's
//! outline, so they get a wider tolerance.

mod models_common;

use rotoscope::preprocess::openpose::keypoints::{BodyPart, Keypoint, PoseFrame};
use rotoscope::preprocess::openpose::{draw_pose_map, json, DrawParts};
use rotoscope::preprocess::pose::{PoseEstimator, PoseSettings};

use models_common::{models_dir, require};

fn astronaut() -> image::RgbImage {
    let path = require(models_dir().join("photos/astronaut.png"));
    image::open(&path).unwrap().to_rgb8()
}

fn estimator(settings: &PoseSettings) -> PoseEstimator {
    let dir = require(models_dir().join("mediapipe"));
    PoseEstimator::new(&dir, settings).unwrap()
}

const SIZE: f32 = 512.0;
/// 5 % of the image size.
const TOL: f32 = 0.05 * SIZE;
/// 10 % for joints hidden inside the suit.
const TOL_HIDDEN: f32 = 0.10 * SIZE;

/// Hand-checked body points (pixels).
const BODY: [(BodyPart, (f32, f32), f32); 9] = [
    (BodyPart::Nose, (225.0, 126.0), TOL),
    (BodyPart::REye, (203.0, 101.0), TOL),
    (BodyPart::LEye, (246.0, 103.0), TOL),
    (BodyPart::REar, (182.0, 118.0), TOL), // under the hair, just outside the cheek line
    (BodyPart::LEar, (268.0, 118.0), TOL),
    (BodyPart::RShoulder, (100.0, 250.0), TOL),
    (BodyPart::LShoulder, (315.0, 260.0), TOL),
    (BodyPart::Neck, (207.0, 255.0), TOL), // midpoint of the two shoulders above
    (BodyPart::RElbow, (45.0, 425.0), TOL_HIDDEN), // bend of the right sleeve
];

/// Hand-checked OpenPose face points (index, pixels).
const FACE: [(usize, &str, (f32, f32)); 6] = [
    (8, "chin", (226.0, 178.0)),
    (30, "nose tip", (225.0, 126.0)),
    (48, "right mouth corner", (203.0, 141.0)),
    (54, "left mouth corner", (244.0, 141.0)),
    (68, "right pupil", (203.0, 101.0)),
    (69, "left pupil", (246.0, 103.0)),
];

fn dist(p: Keypoint, q: (f32, f32)) -> f32 {
    ((p.x - q.0).powi(2) + (p.y - q.1).powi(2)).sqrt()
}

fn check_astronaut(frame: &PoseFrame) {
    assert_eq!((frame.width, frame.height), (512, 512));
    assert_eq!(frame.people.len(), 1, "one person");
    let person = &frame.people[0];
    let body = person.body.expect("body found");
    for (part, expected, tol) in BODY {
        let p = body.get(part);
        assert!(p.is_present(), "{part:?} missing");
        let d = dist(p, expected);
        println!(
            "{part:?}: ({:.1}, {:.1}) vs hand-checked {expected:?}: {d:.1} px",
            p.x, p.y
        );
        assert!(
            d <= tol,
            "{part:?} at ({}, {}) is {d:.1} px from {expected:?}",
            p.x,
            p.y
        );
    }
    // Person's left is on the image's right for someone facing the camera.
    assert!(body.get(BodyPart::LEye).x > body.get(BodyPart::REye).x);
    assert!(body.get(BodyPart::LShoulder).x > body.get(BodyPart::RShoulder).x);
    assert!(body.get(BodyPart::LEar).x > body.get(BodyPart::REar).x);
    // Legs are outside the photo: not reported.
    for part in [
        BodyPart::RKnee,
        BodyPart::LKnee,
        BodyPart::RAnkle,
        BodyPart::LAnkle,
    ] {
        assert!(!body.get(part).is_present(), "{part:?} should be missing");
    }

    let face = person.face.expect("face found");
    for (i, name, expected) in FACE {
        let d = dist(face.points[i], expected);
        println!(
            "face {i} {name}: ({:.1}, {:.1}): {d:.1} px",
            face.points[i].x, face.points[i].y
        );
        assert!(
            d <= TOL,
            "face point {i} ({name}) is {d:.1} px from {expected:?}"
        );
    }
    // Jaw runs from the person's right (image left) to left; brows above the eyes.
    assert!(face.points[0].x < face.points[8].x && face.points[8].x < face.points[16].x);
    assert!(face.points[19].y < face.points[37].y && face.points[24].y < face.points[44].y);
}

#[test]
fn astronaut_keypoints_land_on_hand_checked_positions() {
    let est = estimator(&PoseSettings::default());
    let frame = est.estimate(&astronaut()).unwrap();
    check_astronaut(&frame);

    // What is estimated can be written as OpenPose JSON, read back and drawn.
    let text = json::to_json_string(&frame);
    let back = json::parse_json(&text, None, "astronaut").unwrap();
    assert_eq!(back, vec![frame.clone()]);
    let map = draw_pose_map(&frame, 512, 512, DrawParts::default());
    let lit = map.pixels().filter(|p| p.0 != [0, 0, 0]).count();
    assert!(lit > 2000, "pose map nearly empty ({lit} pixels)");
    // The right shoulder joint is drawn in the annotator's colour for it.
    let shoulder = frame.people[0].body.unwrap().get(BodyPart::RShoulder);
    assert_eq!(
        map.get_pixel(shoulder.x as u32, shoulder.y as u32).0,
        [255, 170, 0]
    );
}

#[test]
fn disabled_parts_are_not_estimated() {
    let settings = PoseSettings {
        hands: false,
        face: false,
        ..PoseSettings::default()
    };
    let frame = estimator(&settings).estimate(&astronaut()).unwrap();
    let person = &frame.people[0];
    assert!(person.face.is_none() && person.left_hand.is_none() && person.right_hand.is_none());
    let nose = person.body.unwrap().get(BodyPart::Nose);
    assert!(dist(nose, (225.0, 126.0)) <= TOL);
}

#[test]
fn empty_image_has_nobody() {
    let est = estimator(&PoseSettings::default());
    let grey = image::RgbImage::from_pixel(320, 240, image::Rgb([128, 128, 128]));
    let frame = est.estimate(&grey).unwrap();
    assert!(frame.people.is_empty());
    assert_eq!((frame.width, frame.height), (320, 240));
}
