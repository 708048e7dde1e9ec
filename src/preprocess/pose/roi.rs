//! Regions of interest (rotated rectangles) from detections and landmarks, as MediaPipe's
//! graphs compute them. Rectangles are normalised to the image (`NormalizedRect`), rotation in
//! radians, clockwise in image coordinates (y down).
//!
//! Calculators reproduced (all under `mediapipe/`):
//! * `calculators/util/detections_to_rects_calculator.{h,cc}` — box / keypoint rects, rotation
//! * `calculators/util/alignment_points_to_rects_calculator.cc` — centre + radius keypoints
//! * `calculators/util/rect_transformation_calculator.cc` — scale, shift, square_long
//! * `calculators/util/landmarks_to_detection_calculator.cc`
//! * `modules/hand_landmark/calculators/hand_landmarks_to_rect_calculator.cc`
//! * `modules/holistic_landmark/calculators/hand_detections_from_pose_to_rects_calculator.cc`
//!
//! and the subgraphs that chain them, each a function below named after its `.pbtxt`.

use std::f32::consts::PI;

use super::detection::Detection;

/// `NormalizedRect`: centre and size normalised by the image size.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NormRect {
    pub x_center: f32,
    pub y_center: f32,
    pub width: f32,
    pub height: f32,
    pub rotation: f32,
}

/// A point normalised by the image size.
pub type NormPoint = (f32, f32);

/// `NormalizeRadians`: into [−π, π).
pub fn normalize_radians(angle: f32) -> f32 {
    let pi = std::f64::consts::PI;
    let a = angle as f64;
    (a - 2.0 * pi * ((a + pi) / (2.0 * pi)).floor()) as f32
}

/// Rotation that turns the vector `from → to` (pixels) to `target` radians.
fn rotation_between(from: NormPoint, to: NormPoint, target: f32, size: (u32, u32)) -> f32 {
    let (w, h) = (size.0 as f32, size.1 as f32);
    let (x0, y0) = (from.0 * w, from.1 * h);
    let (x1, y1) = (to.0 * w, to.1 * h);
    normalize_radians(target - (-(y1 - y0)).atan2(x1 - x0))
}

/// `RectTransformationCalculatorOptions` (no extra rotation in any graph used here).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RectTransform {
    pub scale_x: f32,
    pub scale_y: f32,
    pub shift_x: f32,
    pub shift_y: f32,
    pub square_long: bool,
}

impl RectTransform {
    pub const fn scale_square(scale: f32, shift_y: f32) -> Self {
        RectTransform {
            scale_x: scale,
            scale_y: scale,
            shift_x: 0.0,
            shift_y,
            square_long: true,
        }
    }
}

/// `RectTransformationCalculator::TransformNormalizedRect`.
pub fn transform_rect(rect: NormRect, t: &RectTransform, size: (u32, u32)) -> NormRect {
    let (iw, ih) = (size.0 as f32, size.1 as f32);
    let mut out = rect;
    let (mut width, mut height) = (rect.width, rect.height);
    let rotation = rect.rotation;
    if rotation == 0.0 {
        out.x_center += width * t.shift_x;
        out.y_center += height * t.shift_y;
    } else {
        let x_shift = (iw * width * t.shift_x * rotation.cos()
            - ih * height * t.shift_y * rotation.sin())
            / iw;
        let y_shift = (iw * width * t.shift_x * rotation.sin()
            + ih * height * t.shift_y * rotation.cos())
            / ih;
        out.x_center += x_shift;
        out.y_center += y_shift;
    }
    if t.square_long {
        let long_side = (width * iw).max(height * ih);
        width = long_side / iw;
        height = long_side / ih;
    }
    out.width = width * t.scale_x;
    out.height = height * t.scale_y;
    out
}

/// `LandmarksToDetectionCalculator`: the landmarks' bounding box, landmarks as keypoints.
pub fn landmarks_to_detection(points: &[NormPoint]) -> Detection {
    // MediaPipe seeds the maxima with numeric_limits<float>::min() (the smallest positive
    // float), so a maximum never drops below ~0; kept for fidelity.
    let (mut x0, mut x1, mut y0, mut y1) =
        (f32::MAX, f32::MIN_POSITIVE, f32::MAX, f32::MIN_POSITIVE);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    Detection {
        score: 1.0,
        xmin: x0,
        ymin: y0,
        width: x1 - x0,
        height: y1 - y0,
        keypoints: points.to_vec(),
    }
}

/// `DetectionsToRectsCalculator` in the default `USE_BOUNDING_BOX` mode, rotated so that
/// keypoint `start → end` points at `target_degrees`.
pub fn detection_box_rect(
    d: &Detection,
    start: usize,
    end: usize,
    target_degrees: f32,
    size: (u32, u32),
) -> NormRect {
    NormRect {
        x_center: d.xmin + d.width / 2.0,
        y_center: d.ymin + d.height / 2.0,
        width: d.width,
        height: d.height,
        rotation: rotation_between(
            d.keypoints[start],
            d.keypoints[end],
            target_degrees.to_radians(),
            size,
        ),
    }
}

/// `DetectionsToRectsCalculator` in `USE_KEYPOINTS` mode: the keypoints' bounding box.
pub fn detection_keypoints_rect(
    d: &Detection,
    start: usize,
    end: usize,
    target_degrees: f32,
    size: (u32, u32),
) -> NormRect {
    let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for &(x, y) in &d.keypoints {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    NormRect {
        x_center: (x0 + x1) / 2.0,
        y_center: (y0 + y1) / 2.0,
        width: x1 - x0,
        height: y1 - y0,
        rotation: rotation_between(
            d.keypoints[start],
            d.keypoints[end],
            target_degrees.to_radians(),
            size,
        ),
    }
}

/// `AlignmentPointsRectsCalculator`: centred on keypoint `start`, side twice the distance to
/// keypoint `end`, rotated so that `start → end` points at `target_degrees`.
pub fn alignment_points_rect(
    points: &[NormPoint],
    start: usize,
    end: usize,
    target_degrees: f32,
    size: (u32, u32),
) -> NormRect {
    let (w, h) = (size.0 as f32, size.1 as f32);
    let (xc, yc) = (points[start].0 * w, points[start].1 * h);
    let (xs, ys) = (points[end].0 * w, points[end].1 * h);
    let box_size = ((xs - xc) * (xs - xc) + (ys - yc) * (ys - yc)).sqrt() * 2.0;
    NormRect {
        x_center: xc / w,
        y_center: yc / h,
        width: box_size / w,
        height: box_size / h,
        rotation: rotation_between(
            points[start],
            points[end],
            target_degrees.to_radians(),
            size,
        ),
    }
}

/// `HandLandmarksToRectCalculator`: a rect aligned with the hand (wrist at the bottom) that
/// encloses all landmarks. MediaPipe takes the "finger" direction from landmarks 4, 6 and 8
/// of the full 21-point list (constants named for an older palm subset); kept as is.
pub fn hand_landmarks_rect(landmarks: &[NormPoint], size: (u32, u32)) -> NormRect {
    const WRIST: usize = 0;
    const INDEX_PIP: usize = 4;
    const MIDDLE_PIP: usize = 6;
    const RING_PIP: usize = 8;
    let (w, h) = (size.0 as f32, size.1 as f32);
    let (x0, y0) = (landmarks[WRIST].0 * w, landmarks[WRIST].1 * h);
    let mut x1 = (landmarks[INDEX_PIP].0 + landmarks[RING_PIP].0) / 2.0;
    let mut y1 = (landmarks[INDEX_PIP].1 + landmarks[RING_PIP].1) / 2.0;
    x1 = (x1 + landmarks[MIDDLE_PIP].0) / 2.0 * w;
    y1 = (y1 + landmarks[MIDDLE_PIP].1) / 2.0 * h;
    let rotation = normalize_radians(PI * 0.5 - (-(y1 - y0)).atan2(x1 - x0));
    let reverse = normalize_radians(-rotation);

    let (mut min_x, mut max_x, mut min_y, mut max_y) =
        (f32::MAX, f32::MIN_POSITIVE, f32::MAX, f32::MIN_POSITIVE);
    for &(x, y) in landmarks {
        min_x = min_x.min(x);
        max_x = max_x.max(x);
        min_y = min_y.min(y);
        max_y = max_y.max(y);
    }
    let (acx, acy) = ((max_x + min_x) / 2.0, (max_y + min_y) / 2.0);
    let (mut min_x, mut max_x, mut min_y, mut max_y) =
        (f32::MAX, f32::MIN_POSITIVE, f32::MAX, f32::MIN_POSITIVE);
    let (c, s) = (reverse.cos(), reverse.sin());
    for &(x, y) in landmarks {
        let (ox, oy) = ((x - acx) * w, (y - acy) * h);
        let (px, py) = (ox * c - oy * s, ox * s + oy * c);
        min_x = min_x.min(px);
        max_x = max_x.max(px);
        min_y = min_y.min(py);
        max_y = max_y.max(py);
    }
    let (pcx, pcy) = ((max_x + min_x) / 2.0, (max_y + min_y) / 2.0);
    let (c, s) = (rotation.cos(), rotation.sin());
    let cx = pcx * c - pcy * s + w * acx;
    let cy = pcx * s + pcy * c + h * acy;
    NormRect {
        x_center: cx / w,
        y_center: cy / h,
        width: (max_x - min_x) / w,
        height: (max_y - min_y) / h,
        rotation,
    }
}

/// `HandDetectionsFromPoseToRectsCalculator`: from the pose's wrist, pinky and index points,
/// a square centred on the estimated middle finger (2/3 of the way to the index), side twice
/// the wrist–middle distance, wrist at the bottom.
pub fn hand_rect_from_pose(
    wrist: NormPoint,
    pinky: NormPoint,
    index: NormPoint,
    size: (u32, u32),
) -> NormRect {
    let (w, h) = (size.0 as f32, size.1 as f32);
    let (xw, yw) = (wrist.0 * w, wrist.1 * h);
    let (xi, yi) = (index.0 * w, index.1 * h);
    let (xp, yp) = (pinky.0 * w, pinky.1 * h);
    let xm = (2.0 * xi + xp) / 3.0;
    let ym = (2.0 * yi + yp) / 3.0;
    let box_size = ((xm - xw) * (xm - xw) + (ym - yw) * (ym - yw)).sqrt() * 2.0;
    NormRect {
        x_center: xm / w,
        y_center: ym / h,
        width: box_size / w,
        height: box_size / h,
        rotation: normalize_radians(PI * 0.5 - (-(ym - yw)).atan2(xm - xw)),
    }
}

// ---- The subgraphs -------------------------------------------------------------------

/// `modules/pose_landmark/pose_detection_to_roi.pbtxt`: keypoint 0 (hip centre) as centre,
/// keypoint 1 as radius, upright at 90°, scaled 1.25.
pub fn pose_detection_to_roi(d: &Detection, size: (u32, u32)) -> NormRect {
    let rect = alignment_points_rect(&d.keypoints, 0, 1, 90.0, size);
    transform_rect(rect, &RectTransform::scale_square(1.25, 0.0), size)
}

/// `modules/pose_landmark/pose_landmarks_to_roi.pbtxt`, from the two auxiliary landmarks
/// (33: hip centre, 34: full-body circle point) of the previous frame.
pub fn pose_landmarks_to_roi(auxiliary: &[NormPoint; 2], size: (u32, u32)) -> NormRect {
    let rect = alignment_points_rect(auxiliary, 0, 1, 90.0, size);
    transform_rect(rect, &RectTransform::scale_square(1.25, 0.0), size)
}

/// `modules/hand_landmark/palm_detection_detection_to_roi.pbtxt`: wrist centre (0) → middle
/// finger MCP (2) upright, scaled 2.6 and shifted half a palm towards the fingers.
pub fn palm_detection_to_roi(d: &Detection, size: (u32, u32)) -> NormRect {
    let rect = detection_box_rect(d, 0, 2, 90.0, size);
    transform_rect(rect, &RectTransform::scale_square(2.6, -0.5), size)
}

/// `modules/hand_landmark/hand_landmark_landmarks_to_roi.pbtxt` (= holistic's
/// `hand_landmarks_to_roi.pbtxt`): tracking ROI for the next frame.
pub fn hand_landmarks_to_roi(landmarks: &[NormPoint], size: (u32, u32)) -> NormRect {
    let rect = hand_landmarks_rect(landmarks, size);
    transform_rect(rect, &RectTransform::scale_square(2.0, -0.1), size)
}

/// `modules/holistic_landmark/hand_landmarks_from_pose_to_recrop_roi.pbtxt`: a generous
/// hand region from the pose's wrist, pinky and index landmarks.
pub fn hand_roi_from_pose(
    wrist: NormPoint,
    pinky: NormPoint,
    index: NormPoint,
    size: (u32, u32),
) -> NormRect {
    let rect = hand_rect_from_pose(wrist, pinky, index, size);
    transform_rect(rect, &RectTransform::scale_square(2.7, -0.1), size)
}

/// `modules/holistic_landmark/face_landmarks_from_pose_to_recrop_roi.pbtxt`: from the pose's
/// 11 face landmarks (0–10), the box around them turned so the eyes (5 → 2) are level, ×3.
pub fn face_roi_from_pose(face_points: &[NormPoint; 11], size: (u32, u32)) -> NormRect {
    let d = landmarks_to_detection(face_points);
    let rect = detection_box_rect(&d, 5, 2, 0.0, size);
    transform_rect(rect, &RectTransform::scale_square(3.0, 0.0), size)
}

/// `modules/holistic_landmark/face_detection_front_detections_to_roi.pbtxt`: the face
/// detector's keypoints' box, eyes (0 → 1) level, ×2 and shifted up a little.
pub fn face_detection_to_roi(d: &Detection, size: (u32, u32)) -> NormRect {
    let rect = detection_keypoints_rect(d, 0, 1, 0.0, size);
    transform_rect(rect, &RectTransform::scale_square(2.0, -0.1), size)
}

/// `modules/face_landmark/face_landmark_landmarks_to_roi.pbtxt`: the mesh's box with the
/// eye corners 33 → 263 level, ×1.5.
pub fn face_landmarks_to_roi(mesh: &[NormPoint], size: (u32, u32)) -> NormRect {
    let d = landmarks_to_detection(mesh);
    let rect = detection_box_rect(&d, 33, 263, 0.0, size);
    transform_rect(rect, &RectTransform::scale_square(1.5, 0.0), size)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQ: (u32, u32) = (100, 100);

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-5
    }

    #[test]
    fn normalize_radians_wraps_into_minus_pi_pi() {
        assert!(close(normalize_radians(3.0 * PI), -PI));
        assert!(close(normalize_radians(-PI / 2.0), -PI / 2.0));
        assert!(close(normalize_radians(2.5 * PI), 0.5 * PI));
    }

    #[test]
    fn alignment_rect_upright_person_has_no_rotation() {
        // Hip centre below the circle point: start → end points up (90°).
        let r = alignment_points_rect(&[(0.5, 0.6), (0.5, 0.4)], 0, 1, 90.0, SQ);
        assert!(close(r.x_center, 0.5) && close(r.y_center, 0.6));
        assert!(close(r.width, 0.4) && close(r.height, 0.4));
        assert!(close(r.rotation, 0.0));
        // Person lying with the head to the right: +90°, the crop's "up" then points to +x.
        let r = alignment_points_rect(&[(0.5, 0.5), (0.7, 0.5)], 0, 1, 90.0, SQ);
        assert!(close(r.rotation, PI / 2.0), "{}", r.rotation);
    }

    #[test]
    fn transform_squares_scales_and_shifts_along_rotation() {
        let r = NormRect {
            x_center: 0.5,
            y_center: 0.5,
            width: 0.2,
            height: 0.1,
            rotation: 0.0,
        };
        let t = transform_rect(r, &RectTransform::scale_square(2.0, -0.5), (200, 100));
        // Long side in pixels: max(40, 10) = 40 → width 0.2, height 0.4; ×2.
        assert!(close(t.width, 0.4) && close(t.height, 0.8));
        assert!(close(t.y_center, 0.45));
        // Rotated by 90°: the shift "up" the rect is along −x in the image.
        let r90 = NormRect {
            rotation: PI / 2.0,
            ..r
        };
        let t = transform_rect(r90, &RectTransform::scale_square(1.0, -0.5), (100, 100));
        assert!(
            close(t.x_center, 0.5 + 0.05) && close(t.y_center, 0.5),
            "{t:?}"
        );
    }

    #[test]
    fn hand_rect_from_pose_centres_on_middle_finger() {
        let r = hand_rect_from_pose((0.5, 0.8), (0.4, 0.5), (0.55, 0.5), SQ);
        assert!(close(r.x_center, (2.0 * 0.55 + 0.4) / 3.0));
        assert!(close(r.y_center, 0.5));
        assert!(close(r.width, 0.6) && close(r.height, 0.6));
        assert!(r.rotation.abs() < 0.01);
    }

    #[test]
    fn hand_landmarks_rect_encloses_points() {
        // An upright hand: wrist at the bottom, landmarks 4, 6, 8 straight above it.
        let mut pts = vec![(0.5f32, 0.9f32); 21];
        for (i, p) in pts.iter_mut().enumerate().skip(1) {
            *p = (0.4 + 0.01 * (i % 5) as f32 * 4.0, 0.9 - 0.02 * i as f32);
        }
        pts[4] = (0.5, 0.6);
        pts[6] = (0.5, 0.6);
        pts[8] = (0.5, 0.6);
        let r = hand_landmarks_rect(&pts, SQ);
        assert!(close(r.rotation, 0.0));
        let (x0, x1) = pts
            .iter()
            .fold((1.0f32, 0.0f32), |a, p| (a.0.min(p.0), a.1.max(p.0)));
        let (y0, y1) = pts
            .iter()
            .fold((1.0f32, 0.0f32), |a, p| (a.0.min(p.1), a.1.max(p.1)));
        assert!(close(r.width, x1 - x0) && close(r.height, y1 - y0));
        assert!(close(r.x_center, (x0 + x1) / 2.0) && close(r.y_center, (y0 + y1) / 2.0));
    }

    #[test]
    fn face_landmarks_roi_levels_the_eyes() {
        let mut mesh = vec![(0.5f32, 0.5f32); 468];
        mesh[33] = (0.4, 0.45);
        mesh[263] = (0.6, 0.55); // head tilted: right eye corner lower
        mesh[10] = (0.5, 0.3);
        mesh[152] = (0.5, 0.7);
        let r = face_landmarks_to_roi(&mesh, SQ);
        // Clockwise (positive) by the eye line's slope.
        assert!(close(r.rotation, (0.1f32).atan2(0.2)), "{}", r.rotation);
        assert!(close(r.width, 0.4 * 1.5));
    }
}
