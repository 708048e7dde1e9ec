//! OpenPose keypoint sets (18-point COCO body, 2 × 21 hand points, 70 face points) and the
//! mappings from MediaPipe's landmark sets into them.
//!
//! All coordinates are in pixels of the frame the keypoints belong to (`PoseFrame::width`,
//! `PoseFrame::height`). A keypoint whose confidence is 0 is *missing*: OpenPose writes such
//! points as `0, 0, 0` and ControlNet's annotator does not draw them.
//!
//! Left and right are the person's own, in every set: MediaPipe's "left wrist" (BlazePose 15)
//! and OpenPose's `LWrist` (index 7) are the same joint, which appears on the *right* side of
//! the image when the person faces the camera.

/// One 2-D keypoint in pixels with a confidence in [0, 1]; confidence 0 means missing.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Keypoint {
    pub x: f32,
    pub y: f32,
    pub confidence: f32,
}

impl Keypoint {
    /// The OpenPose "not detected" point `(0, 0, 0)`.
    pub const MISSING: Keypoint = Keypoint {
        x: 0.0,
        y: 0.0,
        confidence: 0.0,
    };

    pub fn new(x: f32, y: f32, confidence: f32) -> Self {
        Keypoint { x, y, confidence }
    }

    pub fn is_present(&self) -> bool {
        self.confidence > 0.0
    }

    /// Keeps the point only if its confidence reaches `threshold`.
    pub fn thresholded(self, threshold: f32) -> Keypoint {
        if self.confidence > 0.0 && self.confidence >= threshold {
            self
        } else {
            Keypoint::MISSING
        }
    }

    /// Midpoint of two points with the smaller confidence; missing if either is missing.
    pub fn midpoint(a: Keypoint, b: Keypoint) -> Keypoint {
        if !a.is_present() || !b.is_present() {
            return Keypoint::MISSING;
        }
        Keypoint::new(
            (a.x + b.x) * 0.5,
            (a.y + b.y) * 0.5,
            a.confidence.min(b.confidence),
        )
    }
}

/// Number of body points in the OpenPose COCO-18 layout.
pub const BODY_POINTS: usize = 18;
/// Number of points per hand (same layout in OpenPose and MediaPipe).
pub const HAND_POINTS: usize = 21;
/// Number of OpenPose face points (68 iBUG-300W points + 2 pupils).
pub const FACE_POINTS: usize = 70;

/// OpenPose COCO-18 body points, in OpenPose's output order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum BodyPart {
    Nose = 0,
    Neck = 1,
    RShoulder = 2,
    RElbow = 3,
    RWrist = 4,
    LShoulder = 5,
    LElbow = 6,
    LWrist = 7,
    RHip = 8,
    RKnee = 9,
    RAnkle = 10,
    LHip = 11,
    LKnee = 12,
    LAnkle = 13,
    REye = 14,
    LEye = 15,
    REar = 16,
    LEar = 17,
}

/// OpenPose's own names of the 18 body points (as in its `poseParameters.cpp`).
pub const BODY_PART_NAMES: [&str; BODY_POINTS] = [
    "Nose",
    "Neck",
    "RShoulder",
    "RElbow",
    "RWrist",
    "LShoulder",
    "LElbow",
    "LWrist",
    "RHip",
    "RKnee",
    "RAnkle",
    "LHip",
    "LKnee",
    "LAnkle",
    "REye",
    "LEye",
    "REar",
    "LEar",
];

/// An 18-point OpenPose body.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Body {
    pub points: [Keypoint; BODY_POINTS],
}

impl Body {
    pub fn get(&self, part: BodyPart) -> Keypoint {
        self.points[part as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.points.iter().all(|p| !p.is_present())
    }
}

/// A 21-point hand: wrist, then thumb, index, middle, ring and pinky from base to tip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hand {
    pub points: [Keypoint; HAND_POINTS],
}

/// 70 OpenPose face points: jaw 0–16, brows 17–26, nose 27–35, eyes 36–47, mouth 48–67,
/// pupils 68 (right eye) and 69 (left eye).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Face {
    pub points: [Keypoint; FACE_POINTS],
}

/// One person: any part may be absent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Person {
    pub body: Option<Body>,
    pub left_hand: Option<Hand>,
    pub right_hand: Option<Hand>,
    pub face: Option<Face>,
}

/// Everyone found in one frame, with the frame's size (the pixel space of the keypoints).
#[derive(Debug, Clone, PartialEq)]
pub struct PoseFrame {
    pub width: u32,
    pub height: u32,
    pub people: Vec<Person>,
}

impl PoseFrame {
    pub fn empty(width: u32, height: u32) -> Self {
        PoseFrame {
            width,
            height,
            people: Vec::new(),
        }
    }
}

/// A landmark as MediaPipe's landmark models give it, already projected to image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Landmark {
    pub x: f32,
    pub y: f32,
    /// Visibility or presence score in [0, 1] (for models without per-point scores: the
    /// model's overall presence score).
    pub score: f32,
}

impl Landmark {
    fn keypoint(self) -> Keypoint {
        Keypoint::new(self.x, self.y, self.score)
    }
}

/// Number of BlazePose landmarks (pose_landmark_full).
pub const BLAZEPOSE_POINTS: usize = 33;
/// Number of face-mesh landmarks (face_landmark.tflite).
pub const FACE_MESH_POINTS: usize = 468;

/// BlazePose landmark indices (MediaPipe `pose_landmark` topology).
pub mod blazepose {
    pub const NOSE: usize = 0;
    pub const LEFT_EYE: usize = 2;
    pub const RIGHT_EYE: usize = 5;
    pub const LEFT_EAR: usize = 7;
    pub const RIGHT_EAR: usize = 8;
    pub const LEFT_SHOULDER: usize = 11;
    pub const RIGHT_SHOULDER: usize = 12;
    pub const LEFT_ELBOW: usize = 13;
    pub const RIGHT_ELBOW: usize = 14;
    pub const LEFT_WRIST: usize = 15;
    pub const RIGHT_WRIST: usize = 16;
    pub const LEFT_PINKY: usize = 17;
    pub const RIGHT_PINKY: usize = 18;
    pub const LEFT_INDEX: usize = 19;
    pub const RIGHT_INDEX: usize = 20;
    pub const LEFT_HIP: usize = 23;
    pub const RIGHT_HIP: usize = 24;
    pub const LEFT_KNEE: usize = 25;
    pub const RIGHT_KNEE: usize = 26;
    pub const LEFT_ANKLE: usize = 27;
    pub const RIGHT_ANKLE: usize = 28;
}

/// Source BlazePose landmark for every OpenPose body point except the neck (index 1), which
/// is the shoulders' midpoint.
const BLAZEPOSE_FOR_BODY: [Option<usize>; BODY_POINTS] = {
    use blazepose::*;
    [
        Some(NOSE),
        None, // neck
        Some(RIGHT_SHOULDER),
        Some(RIGHT_ELBOW),
        Some(RIGHT_WRIST),
        Some(LEFT_SHOULDER),
        Some(LEFT_ELBOW),
        Some(LEFT_WRIST),
        Some(RIGHT_HIP),
        Some(RIGHT_KNEE),
        Some(RIGHT_ANKLE),
        Some(LEFT_HIP),
        Some(LEFT_KNEE),
        Some(LEFT_ANKLE),
        Some(RIGHT_EYE),
        Some(LEFT_EYE),
        Some(RIGHT_EAR),
        Some(LEFT_EAR),
    ]
};

/// BlazePose-33 → OpenPose-18. Neck = midpoint of the shoulders with the smaller of their
/// confidences. Points whose score is below `min_confidence` become missing.
pub fn body_from_blazepose(landmarks: &[Landmark; BLAZEPOSE_POINTS], min_confidence: f32) -> Body {
    let mut points = [Keypoint::MISSING; BODY_POINTS];
    for (dst, src) in points.iter_mut().zip(BLAZEPOSE_FOR_BODY) {
        if let Some(src) = src {
            *dst = landmarks[src].keypoint().thresholded(min_confidence);
        }
    }
    points[BodyPart::Neck as usize] = Keypoint::midpoint(
        points[BodyPart::RShoulder as usize],
        points[BodyPart::LShoulder as usize],
    );
    Body { points }
}

/// MediaPipe's 21 hand landmarks are in OpenPose's hand order already.
pub fn hand_from_mediapipe(landmarks: &[Landmark; HAND_POINTS], min_confidence: f32) -> Hand {
    Hand {
        points: landmarks.map(|l| l.keypoint().thresholded(min_confidence)),
    }
}

/// Face-mesh landmark for each of OpenPose's first 68 face points (the iBUG-300W layout).
///
/// "Right"/"left" are the person's; for a person facing the camera the right side is on the
/// image's left. The mesh indices are MediaPipe's canonical face-mesh topology
/// (`mediapipe/modules/face_geometry/data/canonical_face_model_uv_visualization.png`), chosen
/// as the mesh vertex nearest to each iBUG point and symmetric pairs kept symmetric:
///
/// | OpenPose | part | mesh indices |
/// |---|---|---|
/// | 0–16  | jaw, right ear → chin (8) → left ear | 234 93 132 58 172 136 150 176 152 400 379 365 397 288 361 323 454 |
/// | 17–21 | right brow, outer → inner | 70 63 105 66 107 |
/// | 22–26 | left brow, inner → outer | 336 296 334 293 300 |
/// | 27–30 | nose bridge, top → tip | 168 197 5 4 |
/// | 31–35 | nose base, right → left | 98 97 2 326 327 |
/// | 36–41 | right eye: outer, upper ×2, inner, lower ×2 | 33 160 158 133 153 144 |
/// | 42–47 | left eye: inner, upper ×2, outer, lower ×2 | 362 385 387 263 373 380 |
/// | 48–59 | outer lips from the right corner, upper then lower | 61 40 37 0 267 270 291 321 314 17 84 91 |
/// | 60–67 | inner lips from the right corner | 78 81 13 311 308 402 14 178 |
/// | 68, 69 | pupils | centre of the six eye points 36–41 / 42–47 (face_landmark.tflite has no iris) |
pub const FACE_MESH_FOR_OPENPOSE: [usize; 68] = [
    // jaw
    234, 93, 132, 58, 172, 136, 150, 176, 152, 400, 379, 365, 397, 288, 361, 323, 454,
    // brows
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300, //
    // nose
    168, 197, 5, 4, 98, 97, 2, 326, 327, //
    // eyes
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380, //
    // outer lips
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91, //
    // inner lips
    78, 81, 13, 311, 308, 402, 14, 178,
];

/// 468-point face mesh → OpenPose's 70 face points (see [`FACE_MESH_FOR_OPENPOSE`]).
pub fn face_from_mesh(mesh: &[Landmark], min_confidence: f32) -> Option<Face> {
    if mesh.len() != FACE_MESH_POINTS {
        return None;
    }
    let mut points = [Keypoint::MISSING; FACE_POINTS];
    for (dst, &src) in points.iter_mut().zip(FACE_MESH_FOR_OPENPOSE.iter()) {
        *dst = mesh[src].keypoint().thresholded(min_confidence);
    }
    points[68] = centroid(&points[36..42]);
    points[69] = centroid(&points[42..48]);
    Some(Face { points })
}

/// Mean position of present points with their smallest confidence; missing if any is missing.
fn centroid(points: &[Keypoint]) -> Keypoint {
    if points.is_empty() || points.iter().any(|p| !p.is_present()) {
        return Keypoint::MISSING;
    }
    let n = points.len() as f32;
    let x = points.iter().map(|p| p.x).sum::<f32>() / n;
    let y = points.iter().map(|p| p.y).sum::<f32>() / n;
    let c = points.iter().map(|p| p.confidence).fold(1.0f32, f32::min);
    Keypoint::new(x, y, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blazepose_with(f: impl Fn(usize) -> Landmark) -> [Landmark; BLAZEPOSE_POINTS] {
        std::array::from_fn(f)
    }

    #[test]
    fn blazepose_indices_land_on_openpose_names() {
        // Encode the source index in x so the mapping can be read back.
        let lm = blazepose_with(|i| Landmark {
            x: i as f32,
            y: 100.0 + i as f32,
            score: 0.9,
        });
        let body = body_from_blazepose(&lm, 0.5);
        let expect = [
            (BodyPart::Nose, 0),
            (BodyPart::RShoulder, 12),
            (BodyPart::RElbow, 14),
            (BodyPart::RWrist, 16),
            (BodyPart::LShoulder, 11),
            (BodyPart::LElbow, 13),
            (BodyPart::LWrist, 15),
            (BodyPart::RHip, 24),
            (BodyPart::RKnee, 26),
            (BodyPart::RAnkle, 28),
            (BodyPart::LHip, 23),
            (BodyPart::LKnee, 25),
            (BodyPart::LAnkle, 27),
            (BodyPart::REye, 5),
            (BodyPart::LEye, 2),
            (BodyPart::REar, 8),
            (BodyPart::LEar, 7),
        ];
        for (part, src) in expect {
            assert_eq!(body.get(part).x, src as f32, "{part:?}");
            assert_eq!(body.get(part).y, 100.0 + src as f32, "{part:?}");
        }
        let neck = body.get(BodyPart::Neck);
        assert_eq!(neck.x, (11.0 + 12.0) / 2.0);
        assert_eq!(neck.y, 100.0 + (11.0 + 12.0) / 2.0);
    }

    #[test]
    fn neck_takes_smaller_confidence_and_needs_both_shoulders() {
        let mut lm = blazepose_with(|_| Landmark {
            x: 10.0,
            y: 20.0,
            score: 0.95,
        });
        lm[blazepose::LEFT_SHOULDER].score = 0.7;
        let body = body_from_blazepose(&lm, 0.5);
        assert_eq!(body.get(BodyPart::Neck).confidence, 0.7);

        lm[blazepose::LEFT_SHOULDER].score = 0.3;
        let body = body_from_blazepose(&lm, 0.5);
        assert!(!body.get(BodyPart::LShoulder).is_present());
        assert!(!body.get(BodyPart::Neck).is_present());
        assert!(body.get(BodyPart::RShoulder).is_present());
    }

    #[test]
    fn face_table_is_a_set_of_distinct_mesh_indices() {
        let mut seen = std::collections::HashSet::new();
        for &i in FACE_MESH_FOR_OPENPOSE.iter() {
            assert!(i < FACE_MESH_POINTS);
            assert!(seen.insert(i), "mesh index {i} used twice");
        }
    }

    #[test]
    fn face_mapping_copies_mesh_points_and_centres_pupils() {
        let mesh: Vec<Landmark> = (0..FACE_MESH_POINTS)
            .map(|i| Landmark {
                x: i as f32,
                y: 2.0 * i as f32,
                score: 1.0,
            })
            .collect();
        let face = face_from_mesh(&mesh, 0.5).unwrap();
        assert_eq!(face.points[8].x, 152.0); // chin
        assert_eq!(face.points[30].x, 4.0); // nose tip
        assert_eq!(face.points[36].x, 33.0);
        assert_eq!(face.points[45].x, 263.0);
        assert_eq!(face.points[48].x, 61.0);
        assert_eq!(face.points[54].x, 291.0);
        let right_eye = [33.0, 160.0, 158.0, 133.0, 153.0, 144.0f32];
        let cx = right_eye.iter().sum::<f32>() / 6.0;
        assert!((face.points[68].x - cx).abs() < 1e-4);
        assert!((face.points[68].y - 2.0 * cx).abs() < 1e-3);
        assert!(face_from_mesh(&mesh[..10], 0.5).is_none());
    }

    #[test]
    fn hand_keeps_layout_and_thresholds() {
        let lm: [Landmark; HAND_POINTS] = std::array::from_fn(|i| Landmark {
            x: i as f32,
            y: 0.0,
            score: if i == 3 { 0.2 } else { 0.8 },
        });
        let hand = hand_from_mediapipe(&lm, 0.5);
        assert_eq!(hand.points[20].x, 20.0);
        assert!(!hand.points[3].is_present());
        assert_eq!(hand.points[3], Keypoint::MISSING);
    }
}
