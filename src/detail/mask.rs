//! Region masks (pure): where the detailed crop replaces the frame.
//!
//! The shape is the convex hull of the part's keypoints grown by `grow` pixels (fingers and
//! the forehead reach past their keypoints), then faded out linearly over `feather` pixels.
//! The paste mask also fades to zero towards every crop side that lies inside the frame, so
//! the pasted crop never ends in a visible edge; at the frame's own border it need not.

use image::GrayImage;

use super::regions::FrameEdges;

/// A point in pixel coordinates.
pub type Point = (f32, f32);

/// Convex hull (Andrew's monotone chain), counter-clockwise in a y-down frame's maths
/// orientation, without collinear points. One or two distinct points give themselves.
pub fn convex_hull(points: &[Point]) -> Vec<Point> {
    let mut pts: Vec<Point> = points
        .iter()
        .copied()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    pts.dedup();
    if pts.len() <= 2 {
        return pts;
    }
    let cross =
        |o: Point, a: Point, b: Point| (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0);
    let mut hull: Vec<Point> = Vec::with_capacity(pts.len() * 2);
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &Point>> = if pass == 0 {
            Box::new(pts.iter())
        } else {
            Box::new(pts.iter().rev())
        };
        for &p in iter {
            while hull.len() >= start + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0
            {
                hull.pop();
            }
            hull.push(p);
        }
        // The last point of each chain is the first of the other.
        hull.pop();
    }
    hull
}

/// Distance from `p` to the segment `a`–`b`.
fn segment_distance(p: Point, a: Point, b: Point) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (qx, qy) = (a.0 + t * dx, a.1 + t * dy);
    ((p.0 - qx).powi(2) + (p.1 - qy).powi(2)).sqrt()
}

/// The grown, feathered hull of a part's keypoints.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionShape {
    hull: Vec<Point>,
    grow: f32,
    feather: f32,
}

impl RegionShape {
    /// `None` without points.
    pub fn new(points: &[Point], grow: f32, feather: f32) -> Option<Self> {
        let hull = convex_hull(points);
        (!hull.is_empty()).then(|| RegionShape {
            hull,
            grow: grow.max(0.0),
            feather: feather.max(0.0),
        })
    }

    pub fn hull(&self) -> &[Point] {
        &self.hull
    }

    /// Distance from `p` to the hull, 0 inside.
    pub fn distance(&self, p: Point) -> f32 {
        let n = self.hull.len();
        if n == 1 {
            return segment_distance(p, self.hull[0], self.hull[0]);
        }
        if n >= 3 && self.contains(p) {
            return 0.0;
        }
        (0..n)
            .map(|i| segment_distance(p, self.hull[i], self.hull[(i + 1) % n]))
            .fold(f32::INFINITY, f32::min)
    }

    /// Inside the counter-clockwise hull (on the boundary counts).
    fn contains(&self, p: Point) -> bool {
        let n = self.hull.len();
        (0..n).all(|i| {
            let (a, b) = (self.hull[i], self.hull[(i + 1) % n]);
            (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0) >= 0.0
        })
    }

    /// 1 within `grow` of the hull, falling linearly to 0 at `grow + feather`.
    pub fn coverage(&self, p: Point) -> f32 {
        let d = self.distance(p) - self.grow;
        if d <= 0.0 {
            1.0
        } else if self.feather <= 0.0 || d >= self.feather {
            0.0
        } else {
            1.0 - d / self.feather
        }
    }

    /// How far from the hull the coverage reaches.
    pub fn reach(&self) -> f32 {
        self.grow + self.feather
    }
}

/// Per-pixel weights in [0, 1], row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    pub width: u32,
    pub height: u32,
    pub values: Vec<f32>,
}

impl Mask {
    pub fn get(&self, x: u32, y: u32) -> f32 {
        self.values[(y * self.width + x) as usize]
    }

    /// Whether every weight is 0 (nothing would be pasted).
    pub fn is_empty(&self) -> bool {
        self.values.iter().all(|&v| v <= 0.0)
    }

    pub fn count_nonzero(&self) -> usize {
        self.values.iter().filter(|&&v| v > 0.0).count()
    }
}

/// Weight of a pixel whose centre lies `distance` pixels inside a crop side that fades:
/// 0 on the outermost pixel, 1 from `feather` pixels in.
fn side_fade(distance: f32, feather: f32) -> f32 {
    ((distance - 0.5) / feather.max(1.0)).clamp(0.0, 1.0)
}

/// The paste mask of a `width × height` crop, evaluated at pixel centres (`shape` in crop
/// pixel coordinates): the shape's coverage, faded towards the crop sides not on the frame
/// border (`edges`) over `feather` pixels.
pub fn paste_mask(
    shape: &RegionShape,
    width: u32,
    height: u32,
    feather: f32,
    edges: FrameEdges,
) -> Mask {
    let mut values = Vec::with_capacity(width as usize * height as usize);
    for y in 0..height {
        for x in 0..width {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            let mut w = shape.coverage((px, py));
            if w > 0.0 {
                if !edges.left {
                    w = w.min(side_fade(px, feather));
                }
                if !edges.right {
                    w = w.min(side_fade(width as f32 - px, feather));
                }
                if !edges.top {
                    w = w.min(side_fade(py, feather));
                }
                if !edges.bottom {
                    w = w.min(side_fade(height as f32 - py, feather));
                }
            }
            values.push(w);
        }
    }
    Mask {
        width,
        height,
        values,
    }
}

/// The mask the diffusion pass repaints, at the detail size `detail_w × detail_h` of a
/// `crop_w × crop_h` crop: 255 wherever the paste mask can be non-zero, widened by `margin`
/// crop pixels so the latent grid (one latent per 8×8 pixels) covers all of it; else 0.
pub fn inpaint_mask(
    shape: &RegionShape,
    crop_w: u32,
    crop_h: u32,
    detail_w: u32,
    detail_h: u32,
    margin: f32,
) -> GrayImage {
    let (sx, sy) = (
        crop_w as f32 / detail_w as f32,
        crop_h as f32 / detail_h as f32,
    );
    let limit = shape.reach() + margin;
    GrayImage::from_fn(detail_w, detail_h, |u, v| {
        let p = ((u as f32 + 0.5) * sx, (v as f32 + 0.5) * sy);
        image::Luma([if shape.distance(p) <= limit { 255 } else { 0 }])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hull_drops_interior_and_collinear_points() {
        let pts = [
            (0.0, 0.0),
            (4.0, 0.0),
            (2.0, 0.0),
            (4.0, 4.0),
            (0.0, 4.0),
            (2.0, 2.0),
            (1.0, 3.0),
        ];
        let hull = convex_hull(&pts);
        assert_eq!(hull.len(), 4);
        for corner in [(0.0, 0.0), (4.0, 0.0), (4.0, 4.0), (0.0, 4.0)] {
            assert!(hull.contains(&corner), "{hull:?}");
        }
        assert_eq!(convex_hull(&[(1.0, 1.0), (1.0, 1.0)]), vec![(1.0, 1.0)]);
        assert_eq!(convex_hull(&[]), Vec::<Point>::new());
    }

    #[test]
    fn distance_is_zero_inside_and_euclidean_outside() {
        let shape = RegionShape::new(
            &[(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)],
            0.0,
            0.0,
        )
        .unwrap();
        assert_eq!(shape.distance((5.0, 5.0)), 0.0);
        assert_eq!(shape.distance((10.0, 5.0)), 0.0);
        assert_eq!(shape.distance((13.0, 5.0)), 3.0);
        assert_eq!(shape.distance((13.0, 14.0)), 5.0);
        // Degenerate hulls: a point and a segment.
        let dot = RegionShape::new(&[(2.0, 2.0)], 0.0, 0.0).unwrap();
        assert_eq!(dot.distance((5.0, 6.0)), 5.0);
        let seg = RegionShape::new(&[(0.0, 0.0), (10.0, 0.0)], 0.0, 0.0).unwrap();
        assert_eq!(seg.distance((5.0, 2.0)), 2.0);
        assert!(RegionShape::new(&[], 1.0, 1.0).is_none());
    }

    #[test]
    fn coverage_ramps_linearly_over_the_feather() {
        let shape = RegionShape::new(
            &[(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)],
            2.0,
            4.0,
        )
        .unwrap();
        assert_eq!(shape.coverage((5.0, 5.0)), 1.0);
        assert_eq!(shape.coverage((12.0, 5.0)), 1.0);
        assert_eq!(shape.coverage((13.0, 5.0)), 0.75);
        assert_eq!(shape.coverage((15.0, 5.0)), 0.25);
        assert_eq!(shape.coverage((16.0, 5.0)), 0.0);
        assert_eq!(shape.reach(), 6.0);
        let hard = RegionShape::new(&[(0.0, 0.0)], 1.0, 0.0).unwrap();
        assert_eq!(hard.coverage((0.5, 0.5)), 1.0);
        assert_eq!(hard.coverage((2.0, 0.0)), 0.0);
    }

    #[test]
    fn paste_mask_fades_to_zero_at_inner_crop_sides_only() {
        // A shape covering the whole crop.
        let shape = RegionShape::new(
            &[(-50.0, -50.0), (80.0, -50.0), (80.0, 80.0), (-50.0, 80.0)],
            0.0,
            0.0,
        )
        .unwrap();
        let inner = paste_mask(&shape, 20, 10, 4.0, FrameEdges::default());
        for x in 0..20 {
            assert_eq!(inner.get(x, 0), 0.0);
            assert_eq!(inner.get(x, 9), 0.0);
        }
        for y in 0..10 {
            assert_eq!(inner.get(0, y), 0.0);
            assert_eq!(inner.get(19, y), 0.0);
        }
        assert_eq!(inner.get(1, 5), 0.25);
        assert_eq!(inner.get(4, 5), 1.0);
        assert_eq!(inner.get(10, 4), 1.0);
        // The crop's top-left corner is the frame's: no fade there.
        let edges = FrameEdges {
            left: true,
            top: true,
            ..Default::default()
        };
        let corner = paste_mask(&shape, 20, 10, 4.0, edges);
        assert_eq!(corner.get(0, 0), 1.0);
        assert_eq!(corner.get(19, 5), 0.0);
        assert_eq!(corner.get(10, 9), 0.0);
    }

    #[test]
    fn paste_mask_follows_the_shape() {
        let shape =
            RegionShape::new(&[(10.0, 10.0), (12.0, 10.0), (11.0, 12.0)], 1.0, 2.0).unwrap();
        let edges = FrameEdges {
            left: true,
            top: true,
            right: true,
            bottom: true,
        };
        let m = paste_mask(&shape, 30, 30, 2.0, edges);
        assert_eq!(m.get(11, 10), 1.0);
        assert_eq!(m.get(0, 0), 0.0);
        assert_eq!(m.get(20, 20), 0.0);
        // Everything non-zero lies within reach of the hull.
        for y in 0..30 {
            for x in 0..30 {
                if m.get(x, y) > 0.0 {
                    assert!(shape.distance((x as f32 + 0.5, y as f32 + 0.5)) < shape.reach());
                }
            }
        }
        assert!(!m.is_empty() && m.count_nonzero() < 100);
    }

    #[test]
    fn inpaint_mask_covers_every_pasted_pixel() {
        let shape =
            RegionShape::new(&[(30.0, 30.0), (50.0, 35.0), (40.0, 55.0)], 3.0, 6.0).unwrap();
        let edges = FrameEdges::default();
        let (cw, ch, dw, dh) = (80, 80, 32, 32);
        let paste = paste_mask(&shape, cw, ch, 6.0, edges);
        let sd = inpaint_mask(&shape, cw, ch, dw, dh, 8.0 * cw as f32 / dw as f32);
        for y in 0..ch {
            for x in 0..cw {
                if paste.get(x, y) > 0.0 {
                    let (u, v) = (x * dw / cw, y * dh / ch);
                    assert_eq!(sd.get_pixel(u, v)[0], 255, "({x}, {y})");
                }
            }
        }
        assert!(sd.pixels().any(|p| p[0] == 0));
    }
}
