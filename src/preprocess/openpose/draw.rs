//! Pose maps drawn exactly as ControlNet's openpose annotator draws them, so the openpose
//! ControlNet sees what it was trained on.
//!
//! Reference: `draw_bodypose`, `draw_handpose`, `draw_facepose` and `draw_poses` in
//! comfyui_controlnet_aux (`src/custom_controlnet_aux/open_pose/util.py` and `__init__.py`,
//! Fannovel16/comfyui_controlnet_aux @ e8b689a), with its default `xinsr_stick_scaling=False`;
//! that is line for line the drawing of huggingface `controlnet_aux` 0.0.10 (ControlNet 1.1's
//! annotator): limbs are `cv2.ellipse2Poly` polygons of half-width 4 filled with 60 % of the
//! limb colour (solid, no alpha blending — the blending `addWeighted(0.4, 0.6)` belonged to
//! ControlNet 1.0), joints are radius-4 discs, hand bones are 2-px lines coloured by HSV hue,
//! hand joints radius-4 blue discs, face points radius-3 white discs. Everything is drawn at
//! the canvas size with `int(normalised * size)` coordinates, on black, in RGB channel order.
//! The rasterisation itself is OpenCV's (see [`super::raster`]).

use image::RgbImage;

use super::keypoints::{Body, Face, Hand, PoseFrame, BODY_POINTS};
use super::raster::{ellipse2poly, fill_circle, fill_convex_poly, line, Canvas};

/// Which parts of each person to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrawParts {
    pub body: bool,
    pub hands: bool,
    pub face: bool,
}

impl Default for DrawParts {
    fn default() -> Self {
        DrawParts {
            body: true,
            hands: true,
            face: true,
        }
    }
}

/// Limb pairs (1-based OpenPose indices) in the annotator's drawing order.
const LIMB_SEQUENCE: [(usize, usize); 17] = [
    (2, 3),
    (2, 6),
    (3, 4),
    (4, 5),
    (6, 7),
    (7, 8),
    (2, 9),
    (9, 10),
    (10, 11),
    (2, 12),
    (12, 13),
    (13, 14),
    (2, 1),
    (1, 15),
    (15, 17),
    (1, 16),
    (16, 18),
];

/// The annotator's 18 colours: limb k uses colour k, joint k uses colour k.
pub const BODY_COLORS: [[u8; 3]; BODY_POINTS] = [
    [255, 0, 0],
    [255, 85, 0],
    [255, 170, 0],
    [255, 255, 0],
    [170, 255, 0],
    [85, 255, 0],
    [0, 255, 0],
    [0, 255, 85],
    [0, 255, 170],
    [0, 255, 255],
    [0, 170, 255],
    [0, 85, 255],
    [0, 0, 255],
    [85, 0, 255],
    [170, 0, 255],
    [255, 0, 255],
    [255, 0, 170],
    [255, 0, 85],
];

const STICK_WIDTH: i32 = 4;
const BODY_JOINT_RADIUS: i32 = 4;
const HAND_JOINT_RADIUS: i32 = 4;
const HAND_JOINT_COLOR: [u8; 3] = [0, 0, 255];
const HAND_BONE_THICKNESS: i32 = 2;
const FACE_POINT_RADIUS: i32 = 3;
const FACE_POINT_COLOR: [u8; 3] = [255, 255, 255];
/// util.py's `eps`: hand and face points at integer coordinate 0 are treated as missing.
const EPS: f64 = 0.01;

/// Hand bones, in drawing order; bone `i` has hue `i / 20`.
const HAND_EDGES: [(usize, usize); 20] = [
    (0, 1),
    (1, 2),
    (2, 3),
    (3, 4),
    (0, 5),
    (5, 6),
    (6, 7),
    (7, 8),
    (0, 9),
    (9, 10),
    (10, 11),
    (11, 12),
    (0, 13),
    (13, 14),
    (14, 15),
    (15, 16),
    (0, 17),
    (17, 18),
    (18, 19),
    (19, 20),
];

/// A keypoint normalised to [0, 1] by its frame size, or `None` when missing.
pub type NormPoint = Option<(f64, f64)>;

/// `matplotlib.colors.hsv_to_rgb([h, 1, 1]) * 255`, converted like OpenCV converts a colour
/// scalar to bytes (round half to even).
fn hue_color(h: f64) -> [u8; 3] {
    let (s, v) = (1.0f64, 1.0f64);
    let i = (h * 6.0) as i64;
    let f = h * 6.0 - i as f64;
    let p = v * (1.0 - s);
    let q = v * (1.0 - s * f);
    let t = v * (1.0 - s * (1.0 - f));
    let (r, g, b) = match i % 6 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    [r, g, b].map(|c| (c * 255.0).round_ties_even().clamp(0.0, 255.0) as u8)
}

/// Python's `int(float)`: truncation toward zero.
fn py_int(v: f64) -> i32 {
    v.trunc() as i32
}

/// `draw_bodypose`: 17 limbs as filled ellipses, then the 18 joints.
pub fn draw_body(canvas: &mut Canvas, points: &[NormPoint; BODY_POINTS]) {
    let (w, h) = (canvas.width as f64, canvas.height as f64);
    for (&(a, b), color) in LIMB_SEQUENCE.iter().zip(BODY_COLORS.iter()) {
        let (Some(k1), Some(k2)) = (points[a - 1], points[b - 1]) else {
            continue;
        };
        // util.py's X is the row (y) axis and Y the column (x) axis.
        let ys = [k1.0 * w, k2.0 * w];
        let xs = [k1.1 * h, k2.1 * h];
        let mean_x = (xs[0] + xs[1]) / 2.0;
        let mean_y = (ys[0] + ys[1]) / 2.0;
        let length = ((xs[0] - xs[1]) * (xs[0] - xs[1]) + (ys[0] - ys[1]) * (ys[0] - ys[1])).sqrt();
        let angle = (xs[0] - xs[1]).atan2(ys[0] - ys[1]).to_degrees();
        let polygon = ellipse2poly(
            (py_int(mean_y), py_int(mean_x)),
            (py_int(length / 2.0), STICK_WIDTH),
            py_int(angle),
            0,
            360,
            1,
        );
        let dim = color.map(|c| py_int(c as f64 * 0.6) as u8);
        fill_convex_poly(canvas, &polygon, dim);
    }
    for (point, color) in points.iter().zip(BODY_COLORS.iter()) {
        if let Some((x, y)) = point {
            let center = (py_int(x * w), py_int(y * h));
            fill_circle(canvas, center, BODY_JOINT_RADIUS, *color);
        }
    }
}

/// `draw_handpose`: 20 HSV-coloured bones of width 2, then blue joints.
pub fn draw_hand(canvas: &mut Canvas, points: &[NormPoint; 21]) {
    let (w, h) = (canvas.width as f64, canvas.height as f64);
    for (i, &(e1, e2)) in HAND_EDGES.iter().enumerate() {
        let (Some(k1), Some(k2)) = (points[e1], points[e2]) else {
            continue;
        };
        let (x1, y1) = (py_int(k1.0 * w), py_int(k1.1 * h));
        let (x2, y2) = (py_int(k2.0 * w), py_int(k2.1 * h));
        let positive = |v: i32| v as f64 > EPS;
        if positive(x1) && positive(y1) && positive(x2) && positive(y2) {
            let color = hue_color(i as f64 / HAND_EDGES.len() as f64);
            line(canvas, (x1, y1), (x2, y2), color, HAND_BONE_THICKNESS);
        }
    }
    for (x, y) in points.iter().flatten() {
        let (x, y) = (py_int(x * w), py_int(y * h));
        if x as f64 > EPS && y as f64 > EPS {
            fill_circle(canvas, (x, y), HAND_JOINT_RADIUS, HAND_JOINT_COLOR);
        }
    }
}

/// `draw_facepose`: white radius-3 discs.
pub fn draw_face(canvas: &mut Canvas, points: &[NormPoint]) {
    let (w, h) = (canvas.width as f64, canvas.height as f64);
    for (x, y) in points.iter().flatten() {
        let (x, y) = (py_int(x * w), py_int(y * h));
        if x as f64 > EPS && y as f64 > EPS {
            fill_circle(canvas, (x, y), FACE_POINT_RADIUS, FACE_POINT_COLOR);
        }
    }
}

fn normalise<const N: usize>(
    points: &[super::keypoints::Keypoint; N],
    frame_w: f64,
    frame_h: f64,
) -> [NormPoint; N] {
    std::array::from_fn(|i| {
        let p = points[i];
        p.is_present()
            .then(|| (p.x as f64 / frame_w, p.y as f64 / frame_h))
    })
}

fn body_points(body: &Body, fw: f64, fh: f64) -> [NormPoint; BODY_POINTS] {
    normalise(&body.points, fw, fh)
}

fn hand_points(hand: &Hand, fw: f64, fh: f64) -> [NormPoint; 21] {
    normalise(&hand.points, fw, fh)
}

fn face_points(face: &Face, fw: f64, fh: f64) -> [NormPoint; 70] {
    normalise(&face.points, fw, fh)
}

/// `draw_poses`: every person's body, then left hand, right hand, then face, on a black
/// `width × height` canvas. Keypoints are scaled from the frame's size to the canvas size.
pub fn draw_pose_map(frame: &PoseFrame, width: u32, height: u32, parts: DrawParts) -> RgbImage {
    let mut image = RgbImage::new(width, height);
    let (fw, fh) = (frame.width.max(1) as f64, frame.height.max(1) as f64);
    {
        let mut canvas = Canvas::new(width, height, image.as_mut());
        for person in &frame.people {
            if parts.body {
                if let Some(body) = &person.body {
                    draw_body(&mut canvas, &body_points(body, fw, fh));
                }
            }
            if parts.hands {
                for hand in [&person.left_hand, &person.right_hand]
                    .into_iter()
                    .flatten()
                {
                    draw_hand(&mut canvas, &hand_points(hand, fw, fh));
                }
            }
            if parts.face {
                if let Some(face) = &person.face {
                    draw_face(&mut canvas, &face_points(face, fw, fh));
                }
            }
        }
    }
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_hues_follow_matplotlib() {
        assert_eq!(hue_color(0.0), [255, 0, 0]);
        // h = 0.25: sector 1, f = 0.5, q = 0.5 → 127.5 rounds to even 128.
        assert_eq!(hue_color(0.25), [128, 255, 0]);
        assert_eq!(hue_color(0.5), [0, 255, 255]);
        assert_eq!(hue_color(0.95), [255, 0, 77]);
    }

    #[test]
    fn limb_and_joint_use_annotator_colors() {
        let mut pts: [NormPoint; BODY_POINTS] = [None; BODY_POINTS];
        pts[1] = Some((0.25, 0.5)); // neck
        pts[2] = Some((0.75, 0.5)); // right shoulder
        let mut buf = vec![0u8; 64 * 64 * 3];
        let mut canvas = Canvas::new(64, 64, &mut buf);
        draw_body(&mut canvas, &pts);
        let px = |x: usize, y: usize| &buf[(y * 64 + x) * 3..(y * 64 + x) * 3 + 3];
        assert_eq!(px(32, 32), &[153, 0, 0]); // limb 0: 0.6 × (255, 0, 0)
        assert_eq!(px(16, 32), &BODY_COLORS[1]); // neck joint
        assert_eq!(px(48, 32), &BODY_COLORS[2]); // shoulder joint
        assert_eq!(px(32, 10), &[0, 0, 0]);
    }
}
