//! Region geometry (pure): which part of a frame to detail, from face and hand keypoints.
//!
//! A region starts as the bounding box of a part's keypoints, grows into a padded square
//! (the detail pass renders at a square resolution, so a square crop is not distorted), is
//! smoothed over time (see [`super::tracks`]), and is finally clamped into the frame: a box
//! that sticks out is *shifted* inside; it only shrinks along an axis where it is larger
//! than the frame itself.

use crate::preprocess::openpose::keypoints::{Keypoint, PoseFrame};
use crate::preset::detail::{RegionGeometry, RegionKind};

/// A part needs at least this many present keypoints to be detailed: fewer give no usable
/// extent (a lone wrist point says nothing about the hand's size).
pub const MIN_REGION_POINTS: usize = 4;

/// An axis-aligned rectangle in (continuous) pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f32,
    pub y: f32,
    pub width: f32,
    pub height: f32,
}

impl Rect {
    pub fn right(&self) -> f32 {
        self.x + self.width
    }

    pub fn bottom(&self) -> f32 {
        self.y + self.height
    }
}

/// An axis-aligned square by centre and side, in pixels. Not yet clamped to a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SquareBox {
    pub cx: f32,
    pub cy: f32,
    pub side: f32,
}

/// A rectangle of whole pixels inside a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelRect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// Which sides of a [`PixelRect`] lie on the frame's border. There the paste mask need not
/// fade out: no pixel lies beyond them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameEdges {
    pub left: bool,
    pub top: bool,
    pub right: bool,
    pub bottom: bool,
}

impl PixelRect {
    pub fn right(&self) -> u32 {
        self.x + self.width
    }

    pub fn bottom(&self) -> u32 {
        self.y + self.height
    }

    /// The sides of this rectangle that touch the border of a `width × height` frame.
    pub fn frame_edges(&self, width: u32, height: u32) -> FrameEdges {
        FrameEdges {
            left: self.x == 0,
            top: self.y == 0,
            right: self.right() >= width,
            bottom: self.bottom() >= height,
        }
    }
}

/// Bounding box of the present points; `None` with fewer than [`MIN_REGION_POINTS`].
pub fn keypoint_bounds(points: &[Keypoint]) -> Option<Rect> {
    let present: Vec<&Keypoint> = points.iter().filter(|p| p.is_present()).collect();
    if present.len() < MIN_REGION_POINTS {
        return None;
    }
    let (mut x0, mut y0) = (f32::INFINITY, f32::INFINITY);
    let (mut x1, mut y1) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for p in present {
        x0 = x0.min(p.x);
        y0 = y0.min(p.y);
        x1 = x1.max(p.x);
        y1 = y1.max(p.y);
    }
    Some(Rect {
        x: x0,
        y: y0,
        width: x1 - x0,
        height: y1 - y0,
    })
}

/// The square around `bounds`, centred on them: their longer side grown by `padding` of
/// itself on each side (`long · (1 + 2·padding)`), but at least `long + 2·min_margin` (room
/// for the mask around the part) and at least `min_side`.
pub fn padded_square(bounds: &Rect, padding: f32, min_margin: f32, min_side: f32) -> SquareBox {
    let long = bounds.width.max(bounds.height);
    SquareBox {
        cx: bounds.x + bounds.width * 0.5,
        cy: bounds.y + bounds.height * 0.5,
        side: (long * (1.0 + 2.0 * padding))
            .max(long + 2.0 * min_margin)
            .max(min_side),
    }
}

/// Places `square` inside a `width × height` frame: shifted in when it sticks out, shrunk
/// only along an axis where it is larger than the frame.
pub fn clamp_to_frame(square: SquareBox, width: u32, height: u32) -> Rect {
    let (x, w) = clamp_axis(square.cx, square.side, width as f32);
    let (y, h) = clamp_axis(square.cy, square.side, height as f32);
    Rect {
        x,
        y,
        width: w,
        height: h,
    }
}

/// Start and length of an interval of length `side` centred on `centre`, moved into
/// `[0, limit]`.
fn clamp_axis(centre: f32, side: f32, limit: f32) -> (f32, f32) {
    if side >= limit {
        return (0.0, limit);
    }
    let start = (centre - side * 0.5).clamp(0.0, limit - side);
    (start, side)
}

/// The whole-pixel rectangle nearest to `rect` (edges rounded), inside the frame and at
/// least one pixel wide and high.
pub fn pixel_rect(rect: &Rect, width: u32, height: u32) -> PixelRect {
    let edge = |v: f32, limit: u32| (v.round().max(0.0) as u32).min(limit);
    let x0 = edge(rect.x, width.saturating_sub(1));
    let y0 = edge(rect.y, height.saturating_sub(1));
    let x1 = edge(rect.right(), width).max(x0 + 1);
    let y1 = edge(rect.bottom(), height).max(y0 + 1);
    PixelRect {
        x: x0,
        y: y0,
        width: x1 - x0,
        height: y1 - y0,
    }
}

/// The size a `width × height` crop is rendered at: its longer side becomes `resolution`,
/// the other keeps the aspect ratio; both rounded to a positive multiple of `multiple`
/// (the VAE's latent factor).
pub fn detail_size(width: u32, height: u32, resolution: u32, multiple: u32) -> (u32, u32) {
    let multiple = multiple.max(1);
    let long = width.max(height).max(1) as f64;
    let scale = resolution as f64 / long;
    let fit = |v: u32| {
        let blocks = ((v as f64 * scale) / multiple as f64).round() as u32;
        blocks.max(1) * multiple
    };
    (fit(width), fit(height))
}

impl RegionGeometry {
    /// The crop square for keypoints with these bounds.
    pub fn square(&self, bounds: &Rect) -> SquareBox {
        let long = bounds.width.max(bounds.height);
        let margin = self.mask_grow * long + self.mask_reach + 1.0;
        padded_square(bounds, self.padding, margin, self.min_side)
    }
}

/// One part of one person found in one frame, in the pixels of the frame being detailed.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionCandidate {
    pub kind: RegionKind,
    /// Index of the person in the frame's keypoints.
    pub person: usize,
    /// The part's keypoints (missing ones kept, as missing).
    pub points: Vec<Keypoint>,
    /// Bounding box of the present points.
    pub bounds: Rect,
    /// The padded square before smoothing and clamping.
    pub square: SquareBox,
}

/// Keypoints scaled from the pose's frame size to a `width × height` frame (the rendered
/// frame may be smaller than the source the keypoints were found on).
pub fn scale_points(
    points: &[Keypoint],
    pose: &PoseFrame,
    width: u32,
    height: u32,
) -> Vec<Keypoint> {
    let sx = width as f32 / pose.width.max(1) as f32;
    let sy = height as f32 / pose.height.max(1) as f32;
    points
        .iter()
        .map(|p| {
            if p.is_present() {
                Keypoint::new(p.x * sx, p.y * sy, p.confidence)
            } else {
                Keypoint::MISSING
            }
        })
        .collect()
}

/// Every face and hand of every person with enough keypoints, in the pixels of a
/// `width × height` frame, people in order and within a person face, left hand, right hand.
/// `geometry(kind)` is `None` for parts not to be detailed.
pub fn region_candidates(
    pose: &PoseFrame,
    width: u32,
    height: u32,
    geometry: impl Fn(RegionKind) -> Option<RegionGeometry>,
) -> Vec<RegionCandidate> {
    let mut out = Vec::new();
    for (person_index, person) in pose.people.iter().enumerate() {
        for kind in RegionKind::ALL {
            let Some(geometry) = geometry(kind) else {
                continue;
            };
            let points: Option<&[Keypoint]> = match kind {
                RegionKind::Face => person.face.as_ref().map(|f| &f.points[..]),
                RegionKind::LeftHand => person.left_hand.as_ref().map(|h| &h.points[..]),
                RegionKind::RightHand => person.right_hand.as_ref().map(|h| &h.points[..]),
            };
            let Some(points) = points else { continue };
            let points = scale_points(points, pose, width, height);
            let Some(bounds) = keypoint_bounds(&points) else {
                continue;
            };
            out.push(RegionCandidate {
                kind,
                person: person_index,
                square: geometry.square(&bounds),
                bounds,
                points,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::openpose::keypoints::{Face, Hand, Person};

    fn kp(x: f32, y: f32) -> Keypoint {
        Keypoint::new(x, y, 1.0)
    }

    #[test]
    fn bounds_ignore_missing_points_and_need_enough_points() {
        let pts = [
            kp(10.0, 20.0),
            Keypoint::MISSING,
            kp(30.0, 25.0),
            kp(15.0, 60.0),
            kp(12.0, 22.0),
        ];
        let b = keypoint_bounds(&pts).unwrap();
        assert_eq!(
            b,
            Rect {
                x: 10.0,
                y: 20.0,
                width: 20.0,
                height: 40.0
            }
        );
        assert!(keypoint_bounds(&pts[..3]).is_none());
        assert!(keypoint_bounds(&[Keypoint::MISSING; 10]).is_none());
    }

    #[test]
    fn padding_grows_the_longer_side_on_both_sides() {
        let b = Rect {
            x: 10.0,
            y: 20.0,
            width: 20.0,
            height: 40.0,
        };
        let s = padded_square(&b, 0.25, 0.0, 8.0);
        assert_eq!((s.cx, s.cy), (20.0, 40.0));
        assert_eq!(s.side, 40.0 * 1.5);
        // Room for the mask wins over a small padding.
        assert_eq!(padded_square(&b, 0.25, 15.0, 8.0).side, 70.0);
        // A single-pixel-sized part gets the minimum side.
        let dot = Rect {
            x: 5.0,
            y: 5.0,
            width: 1.0,
            height: 0.0,
        };
        assert_eq!(padded_square(&dot, 0.3, 2.0, 24.0).side, 24.0);
        // The geometry leaves room for mask growth + reach + 1 pixel on each side.
        let g = RegionGeometry {
            padding: 0.1,
            mask_grow: 0.25,
            mask_reach: 9.0,
            min_side: 8.0,
        };
        assert_eq!(g.square(&b).side, 40.0 + 2.0 * (10.0 + 9.0 + 1.0));
    }

    #[test]
    fn clamping_shifts_boxes_inside_without_shrinking() {
        // Sticks out at the top-left corner: moved in, size kept.
        let r = clamp_to_frame(
            SquareBox {
                cx: 5.0,
                cy: -3.0,
                side: 40.0,
            },
            200,
            100,
        );
        assert_eq!(
            r,
            Rect {
                x: 0.0,
                y: 0.0,
                width: 40.0,
                height: 40.0
            }
        );
        // Sticks out at the bottom-right.
        let r = clamp_to_frame(
            SquareBox {
                cx: 195.0,
                cy: 90.0,
                side: 40.0,
            },
            200,
            100,
        );
        assert_eq!((r.x, r.y, r.width, r.height), (160.0, 60.0, 40.0, 40.0));
        // Inside: unchanged.
        let r = clamp_to_frame(
            SquareBox {
                cx: 100.0,
                cy: 50.0,
                side: 20.0,
            },
            200,
            100,
        );
        assert_eq!((r.x, r.y, r.width, r.height), (90.0, 40.0, 20.0, 20.0));
    }

    #[test]
    fn clamping_shrinks_only_the_axis_larger_than_the_frame() {
        let r = clamp_to_frame(
            SquareBox {
                cx: 150.0,
                cy: 50.0,
                side: 120.0,
            },
            200,
            100,
        );
        // Taller than the frame: full height; width kept and shifted inside.
        assert_eq!((r.x, r.y, r.width, r.height), (80.0, 0.0, 120.0, 100.0));
    }

    #[test]
    fn pixel_rects_round_and_stay_inside() {
        let r = pixel_rect(
            &Rect {
                x: 10.4,
                y: 0.0,
                width: 20.2,
                height: 99.9,
            },
            64,
            100,
        );
        assert_eq!(
            r,
            PixelRect {
                x: 10,
                y: 0,
                width: 21,
                height: 100
            }
        );
        let edges = r.frame_edges(64, 100);
        assert_eq!(
            edges,
            FrameEdges {
                left: false,
                top: true,
                right: false,
                bottom: true
            }
        );
        // Degenerate rectangles still cover one pixel.
        let r = pixel_rect(
            &Rect {
                x: 70.0,
                y: 3.0,
                width: 0.0,
                height: 0.0,
            },
            64,
            100,
        );
        assert_eq!((r.x, r.width, r.height), (63, 1, 1));
    }

    #[test]
    fn detail_size_keeps_aspect_on_the_latent_grid() {
        assert_eq!(detail_size(100, 100, 512, 8), (512, 512));
        assert_eq!(detail_size(100, 60, 512, 8), (512, 304));
        assert_eq!(detail_size(30, 200, 64, 8), (8, 64));
        assert_eq!(detail_size(1, 1000, 64, 8), (8, 64));
    }

    #[test]
    fn candidates_scale_keypoints_to_the_rendered_frame() {
        let face = Face {
            points: std::array::from_fn(|i| {
                kp(100.0 + (i % 10) as f32 * 4.0, 50.0 + (i / 10) as f32 * 4.0)
            }),
        };
        let mut hand = Hand {
            points: [Keypoint::MISSING; 21],
        };
        for (i, p) in hand.points.iter_mut().enumerate().take(3) {
            *p = kp(300.0 + i as f32, 300.0);
        }
        let pose = PoseFrame {
            width: 400,
            height: 400,
            people: vec![Person {
                face: Some(face),
                left_hand: Some(hand),
                ..Default::default()
            }],
        };
        let geometry = RegionGeometry {
            padding: 0.5,
            mask_grow: 0.0,
            mask_reach: 0.0,
            min_side: 4.0,
        };
        let c = region_candidates(&pose, 200, 100, |_| Some(geometry));
        // The hand has only 3 points: skipped.
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].kind, RegionKind::Face);
        // x scaled by 1/2, y by 1/4.
        assert_eq!(
            c[0].bounds,
            Rect {
                x: 50.0,
                y: 12.5,
                width: 18.0,
                height: 6.0
            }
        );
        assert_eq!(c[0].square.side, 36.0);
        assert!(region_candidates(&pose, 200, 100, |_| None).is_empty());
    }
}
