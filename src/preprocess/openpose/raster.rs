//! OpenCV's integer rasterisers, reproduced pixel for pixel, for the few primitives
//! ControlNet's openpose annotator uses: `cv2.ellipse2Poly`, `cv2.fillConvexPoly`,
//! `cv2.circle(thickness=-1)` and `cv2.line(thickness=2)`, all with the default 8-connected
//! line type and no sub-pixel shift.
//!
//! Ported from the semantics of `modules/imgproc/src/drawing.cpp` (OpenCV 4.x/5.0:
//! `ellipse2Poly`, `FillConvexPoly`, `Line`/`LineIterator`, `Line2`, `Circle`, `ThickLine`,
//! `clipLine`). Fixed-point arithmetic (16 fractional bits) and integer division are kept
//! exactly, because a single rounding difference moves a whole edge pixel.

use std::sync::OnceLock;

const XY_SHIFT: u32 = 16;
const XY_ONE: i64 = 1 << XY_SHIFT;

/// An RGB8 image being drawn on (row-major, 3 bytes per pixel).
pub struct Canvas<'a> {
    pub width: i32,
    pub height: i32,
    pub pixels: &'a mut [u8],
}

impl<'a> Canvas<'a> {
    pub fn new(width: u32, height: u32, pixels: &'a mut [u8]) -> Self {
        assert_eq!(
            pixels.len(),
            width as usize * height as usize * 3,
            "canvas buffer size"
        );
        Canvas {
            width: width as i32,
            height: height as i32,
            pixels,
        }
    }

    #[inline]
    fn put(&mut self, x: i32, y: i32, color: [u8; 3]) {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        self.pixels[i..i + 3].copy_from_slice(&color);
    }

    /// `ICV_HLINE`: fills `[xl, xr]` on row `y` (nothing when `xl > xr`); callers clip.
    #[inline]
    fn hline(&mut self, y: i32, xl: i32, xr: i32, color: [u8; 3]) {
        for x in xl..=xr {
            self.put(x, y, color);
        }
    }
}

/// OpenCV's `cvRound` for doubles: round half to even (SSE2 conversion, default mode).
#[inline]
fn cv_round(v: f64) -> i64 {
    v.round_ties_even() as i64
}

/// OpenCV's `SinTable`: sin of whole degrees 0..=450, written with 7 decimals as `float`.
fn sin_table() -> &'static [f32; 451] {
    static TABLE: OnceLock<[f32; 451]> = OnceLock::new();
    TABLE.get_or_init(|| {
        std::array::from_fn(|deg| {
            let s = (deg as f64).to_radians().sin();
            // The table holds the decimal string rounded to 7 places, parsed as float.
            format!("{:.7}", s)
                .parse::<f32>()
                .expect("formatted float parses")
        })
    })
}

/// `ellipse2Poly(Point center, Size axes, int angle, int arcStart, int arcEnd, int delta)`.
pub fn ellipse2poly(
    center: (i32, i32),
    axes: (i32, i32),
    angle: i32,
    arc_start: i32,
    arc_end: i32,
    delta: i32,
) -> Vec<(i32, i32)> {
    let table = sin_table();
    let (mut angle, mut arc_start, mut arc_end) = (angle, arc_start, arc_end);
    while angle < 0 {
        angle += 360;
    }
    while angle > 360 {
        angle -= 360;
    }
    if arc_start > arc_end {
        std::mem::swap(&mut arc_start, &mut arc_end);
    }
    while arc_start < 0 {
        arc_start += 360;
        arc_end += 360;
    }
    while arc_end > 360 {
        arc_end -= 360;
        arc_start -= 360;
    }
    if arc_end - arc_start > 360 {
        arc_start = 0;
        arc_end = 360;
    }
    // sincos(): alpha = cos, beta = sin, both read from the float table.
    let a = if angle < 0 { angle + 360 } else { angle } as usize;
    let (alpha, beta) = (table[450 - a] as f64, table[a] as f64);
    let (cx, cy) = (center.0 as f64, center.1 as f64);
    let (w, h) = (axes.0 as f64, axes.1 as f64);

    let mut raw: Vec<(f64, f64)> = Vec::new();
    let mut i = arc_start;
    while i < arc_end + delta {
        let mut ang = i.min(arc_end);
        if ang < 0 {
            ang += 360;
        }
        let x = w * table[(450 - ang) as usize] as f64;
        let y = h * table[ang as usize] as f64;
        raw.push((cx + x * alpha - y * beta, cy + x * beta + y * alpha));
        i += delta;
    }
    if raw.len() == 1 {
        raw = vec![(cx, cy); 2];
    }

    let mut pts: Vec<(i32, i32)> = Vec::with_capacity(raw.len());
    let mut prev = (i32::MIN, i32::MIN);
    for (x, y) in raw {
        let p = (cv_round(x) as i32, cv_round(y) as i32);
        if p != prev {
            pts.push(p);
            prev = p;
        }
    }
    if pts.len() == 1 {
        pts = vec![center; 2];
    }
    pts
}

/// `clipLine(Size2l, Point2l&, Point2l&)`: clips to `[0, w-1] × [0, h-1]`; false if outside.
fn clip_line(width: i64, height: i64, p1: &mut (i64, i64), p2: &mut (i64, i64)) -> bool {
    if width <= 0 || height <= 0 {
        return false;
    }
    let (right, bottom) = (width - 1, height - 1);
    let code = |p: (i64, i64)| {
        (p.0 < 0) as i32
            + (p.0 > right) as i32 * 2
            + (p.1 < 0) as i32 * 4
            + (p.1 > bottom) as i32 * 8
    };
    let (mut c1, mut c2) = (code(*p1), code(*p2));
    if (c1 & c2) == 0 && (c1 | c2) != 0 {
        if c1 & 12 != 0 {
            let a = if c1 < 8 { 0 } else { bottom };
            p1.0 += (a - p1.1) * (p2.0 - p1.0) / (p2.1 - p1.1);
            p1.1 = a;
            c1 = (p1.0 < 0) as i32 + (p1.0 > right) as i32 * 2;
        }
        if c2 & 12 != 0 {
            let a = if c2 < 8 { 0 } else { bottom };
            p2.0 += (a - p2.1) * (p2.0 - p1.0) / (p2.1 - p1.1);
            p2.1 = a;
            c2 = (p2.0 < 0) as i32 + (p2.0 > right) as i32 * 2;
        }
        if (c1 & c2) == 0 && (c1 | c2) != 0 {
            if c1 != 0 {
                let a = if c1 == 1 { 0 } else { right };
                p1.1 += (a - p1.0) * (p2.1 - p1.1) / (p2.0 - p1.0);
                p1.0 = a;
                c1 = 0;
            }
            if c2 != 0 {
                let a = if c2 == 1 { 0 } else { right };
                p2.1 += (a - p2.0) * (p2.1 - p1.1) / (p2.0 - p1.0);
                p2.0 = a;
                c2 = 0;
            }
        }
    }
    (c1 | c2) == 0
}

/// `Line(img, pt1, pt2, color, 8)`: the 8-connected `LineIterator` walk, left to right.
fn line8(canvas: &mut Canvas, p1: (i32, i32), p2: (i32, i32), color: [u8; 3]) {
    let (w, h) = (canvas.width, canvas.height);
    let (mut a, mut b) = ((p1.0 as i64, p1.1 as i64), (p2.0 as i64, p2.1 as i64));
    let outside = |p: (i64, i64)| p.0 < 0 || p.0 >= w as i64 || p.1 < 0 || p.1 >= h as i64;
    if (outside(a) || outside(b)) && !clip_line(w as i64, h as i64, &mut a, &mut b) {
        return;
    }
    let (mut x, mut y) = (a.0 as i32, a.1 as i32);
    let mut dx = (b.0 - a.0) as i32;
    let mut dy = (b.1 - a.1) as i32;
    // left_to_right: start from the point with the smaller x.
    if dx < 0 {
        dx = -dx;
        dy = -dy;
        x = b.0 as i32;
        y = b.1 as i32;
    }
    let ystep = if dy < 0 { -1 } else { 1 };
    dy = dy.abs();
    // Step along the major axis every iteration, along the minor one when err < 0.
    let (major, minor, dmaj, dmin) = if dy > dx {
        ((0, ystep), (1, 0), dy, dx)
    } else {
        ((1, 0), (0, ystep), dx, dy)
    };
    let mut err = dmaj - (dmin + dmin);
    let plus_delta = dmaj + dmaj;
    let minus_delta = -(dmin + dmin);
    for _ in 0..=dmaj {
        canvas.put(x, y, color);
        let mask = err < 0;
        err += minus_delta + if mask { plus_delta } else { 0 };
        x += major.0 + if mask { minor.0 } else { 0 };
        y += major.1 + if mask { minor.1 } else { 0 };
    }
}

/// `Line2(img, pt1, pt2, color)`: line between fixed-point (16-bit fraction) points.
fn line2(canvas: &mut Canvas, p1: (i64, i64), p2: (i64, i64), color: [u8; 3]) {
    let (w, h) = (canvas.width, canvas.height);
    let (mut p1, mut p2) = (p1, p2);
    if !clip_line(
        (w as i64) << XY_SHIFT,
        (h as i64) << XY_SHIFT,
        &mut p1,
        &mut p2,
    ) {
        return;
    }
    let dx = p2.0 - p1.0;
    let dy = p2.1 - p1.1;
    let j = if dx < 0 { -1i64 } else { 0 };
    let ax = (dx ^ j) - j;
    let i = if dy < 0 { -1i64 } else { 0 };
    let ay = (dy ^ i) - i;

    // Walk along the longer axis from the endpoint with the smaller coordinate on it.
    let (x_step, y_step, ecount);
    if ax > ay {
        let dy = (dy ^ j) - j;
        if j != 0 {
            std::mem::swap(&mut p1, &mut p2);
        }
        x_step = XY_ONE;
        y_step = (dy << XY_SHIFT) / (ax | 1);
        ecount = ((p2.0 - p1.0) >> XY_SHIFT) as i32;
    } else {
        let dx = (dx ^ i) - i;
        if i != 0 {
            std::mem::swap(&mut p1, &mut p2);
        }
        x_step = (dx << XY_SHIFT) / (ay | 1);
        y_step = XY_ONE;
        ecount = ((p2.1 - p1.1) >> XY_SHIFT) as i32;
    }
    p1.0 += XY_ONE >> 1;
    p1.1 += XY_ONE >> 1;

    let mut put = |x: i64, y: i64| {
        if 0 <= x && x < w as i64 && 0 <= y && y < h as i64 {
            canvas.put(x as i32, y as i32, color);
        }
    };
    put(
        (p2.0 + (XY_ONE >> 1)) >> XY_SHIFT,
        (p2.1 + (XY_ONE >> 1)) >> XY_SHIFT,
    );
    let mut ecount = ecount;
    if ax > ay {
        let mut x = p1.0 >> XY_SHIFT;
        let mut y = p1.1;
        while ecount >= 0 {
            put(x, y >> XY_SHIFT);
            x += 1;
            y += y_step;
            ecount -= 1;
        }
    } else {
        let mut x = p1.0;
        let mut y = p1.1 >> XY_SHIFT;
        while ecount >= 0 {
            put(x >> XY_SHIFT, y);
            x += x_step;
            y += 1;
            ecount -= 1;
        }
    }
}

/// `FillConvexPoly(img, v, npts, color, line_type=8, shift)` with points in `shift`-bit fixed
/// point: the outline is drawn with 8-connected lines, then rows are filled between the two
/// edge chains running from the topmost vertex.
fn fill_convex_poly_fixed(canvas: &mut Canvas, v: &[(i64, i64)], shift: u32, color: [u8; 3]) {
    let npts = v.len();
    if npts == 0 {
        return;
    }
    let delta: i64 = (1i64 << shift) >> 1;
    let (delta1, delta2) = (XY_ONE >> 1, XY_ONE >> 1);
    let (w, h) = (canvas.width, canvas.height);

    let mut p0 = v[npts - 1];
    p0.0 <<= XY_SHIFT - shift;
    p0.1 <<= XY_SHIFT - shift;
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (v[0].0, v[0].0, v[0].1, v[0].1);
    let mut imin = 0usize;
    for (i, &vp) in v.iter().enumerate() {
        let mut p = vp;
        if p.1 < ymin {
            ymin = p.1;
            imin = i;
        }
        ymax = ymax.max(p.1);
        xmax = xmax.max(p.0);
        xmin = xmin.min(p.0);
        p.0 <<= XY_SHIFT - shift;
        p.1 <<= XY_SHIFT - shift;
        if shift == 0 {
            let a = ((p0.0 >> XY_SHIFT) as i32, (p0.1 >> XY_SHIFT) as i32);
            let b = ((p.0 >> XY_SHIFT) as i32, (p.1 >> XY_SHIFT) as i32);
            line8(canvas, a, b, color);
        } else {
            line2(canvas, p0, p, color);
        }
        p0 = p;
    }
    let xmin = (xmin + delta) >> shift;
    let xmax = (xmax + delta) >> shift;
    let ymin = (ymin + delta) >> shift;
    let ymax = (ymax + delta) >> shift;
    if npts < 3 || (xmax as i32) < 0 || (ymax as i32) < 0 || xmin as i32 >= w || ymin as i32 >= h {
        return;
    }
    let ymax = (ymax as i32).min(h - 1);

    #[derive(Clone, Copy)]
    struct Edge {
        idx: usize,
        di: usize,
        x: i64,
        dx: i64,
        ye: i32,
    }
    let mut y = ymin as i32;
    let start = Edge {
        idx: imin,
        di: 1,
        x: -XY_ONE,
        dx: 0,
        ye: y,
    };
    let mut edge = [
        start,
        Edge {
            di: npts - 1,
            ..start
        },
    ];
    let mut edges = npts as i64;
    loop {
        // line_type < CV_AA: edges are advanced on every row.
        for e in edge.iter_mut() {
            if y >= e.ye {
                let mut idx0 = e.idx;
                let di = e.di;
                let mut idx = idx0 + di;
                if idx >= npts {
                    idx -= npts;
                }
                loop {
                    // `for (; edges-- > 0; )`
                    let more = edges > 0;
                    edges -= 1;
                    if !more {
                        break;
                    }
                    let ty = ((v[idx].1 + delta) >> shift) as i32;
                    if ty > y {
                        let mut xs = v[idx0].0;
                        let mut xe = v[idx].0;
                        if shift != XY_SHIFT {
                            xs <<= XY_SHIFT - shift;
                            xe <<= XY_SHIFT - shift;
                        }
                        e.ye = ty;
                        e.dx = ((xe - xs) * 2 + (ty - y) as i64) / (2 * (ty - y) as i64);
                        e.x = xs;
                        e.idx = idx;
                        break;
                    }
                    idx0 = idx;
                    idx += di;
                    if idx >= npts {
                        idx -= npts;
                    }
                }
            }
        }
        if edges < 0 {
            break;
        }
        if y >= 0 {
            let (left, right) = if edge[0].x > edge[1].x {
                (1, 0)
            } else {
                (0, 1)
            };
            let mut xx1 = ((edge[left].x + delta1) >> XY_SHIFT) as i32;
            let mut xx2 = ((edge[right].x + delta2) >> XY_SHIFT) as i32;
            if xx2 >= 0 && xx1 < w {
                xx1 = xx1.max(0);
                xx2 = xx2.min(w - 1);
                canvas.hline(y, xx1, xx2, color);
            }
        }
        edge[0].x += edge[0].dx;
        edge[1].x += edge[1].dx;
        y += 1;
        if y > ymax {
            break;
        }
    }
}

/// `cv2.fillConvexPoly(img, pts, color)` (line type 8, shift 0).
pub fn fill_convex_poly(canvas: &mut Canvas, pts: &[(i32, i32)], color: [u8; 3]) {
    let v: Vec<(i64, i64)> = pts.iter().map(|&(x, y)| (x as i64, y as i64)).collect();
    fill_convex_poly_fixed(canvas, &v, 0, color);
}

/// `Circle(img, center, radius, color, fill)` — the integer midpoint circle behind
/// `cv2.circle` with the default line type and no shift.
fn circle_impl(canvas: &mut Canvas, center: (i32, i32), radius: i32, color: [u8; 3], fill: bool) {
    let (w, h) = (canvas.width, canvas.height);
    let (cx, cy) = center;
    let mut err = 0i32;
    let mut dx = radius;
    let mut dy = 0i32;
    let mut plus = 1i32;
    let mut minus = (radius << 1) - 1;
    let inside = cx >= radius && cx < w - radius && cy >= radius && cy < h - radius;

    while dx >= dy {
        let (y11, y12, y21, y22) = (cy - dy, cy + dy, cy - dx, cy + dx);
        let (mut x11, mut x12, mut x21, mut x22) = (cx - dx, cx + dx, cx - dy, cx + dy);
        if inside {
            for (y, xl, xr) in [
                (y11, x11, x12),
                (y12, x11, x12),
                (y21, x21, x22),
                (y22, x21, x22),
            ] {
                if fill {
                    canvas.hline(y, xl, xr, color);
                } else {
                    canvas.put(xl, y, color);
                    canvas.put(xr, y, color);
                }
            }
        } else if x11 < w && x12 >= 0 && y21 < h && y22 >= 0 {
            if fill {
                x11 = x11.max(0);
                x12 = x12.min(w - 1);
            }
            for y in [y11, y12] {
                if (y as u32) < h as u32 {
                    if fill {
                        canvas.hline(y, x11, x12, color);
                    } else {
                        if x11 >= 0 {
                            canvas.put(x11, y, color);
                        }
                        if x12 < w {
                            canvas.put(x12, y, color);
                        }
                    }
                }
            }
            if x21 < w && x22 >= 0 {
                if fill {
                    x21 = x21.max(0);
                    x22 = x22.min(w - 1);
                }
                for y in [y21, y22] {
                    if (y as u32) < h as u32 {
                        if fill {
                            canvas.hline(y, x21, x22, color);
                        } else {
                            if x21 >= 0 {
                                canvas.put(x21, y, color);
                            }
                            if x22 < w {
                                canvas.put(x22, y, color);
                            }
                        }
                    }
                }
            }
        }
        dy += 1;
        err += plus;
        plus += 2;
        // `mask = (err <= 0) - 1`
        let mask = if err <= 0 { 0 } else { -1 };
        err -= minus & mask;
        dx += mask;
        minus -= mask & 2;
    }
}

/// `cv2.circle(img, center, radius, color, thickness=-1)`.
pub fn fill_circle(canvas: &mut Canvas, center: (i32, i32), radius: i32, color: [u8; 3]) {
    circle_impl(canvas, center, radius, color, true);
}

/// `cv2.line(img, p1, p2, color, thickness)` for the 8-connected line type and shift 0;
/// `thickness > 1` goes through `ThickLine`'s polygon with round caps.
pub fn line(canvas: &mut Canvas, p1: (i32, i32), p2: (i32, i32), color: [u8; 3], thickness: i32) {
    if thickness <= 1 {
        line8(canvas, p1, p2, color);
        return;
    }
    // OpenCV 4.x draws the whole segment and lets the rasterisers clip per pixel. (OpenCV 5.0
    // first clips thick lines whose ends leave the image, which moves their edges by a pixel;
    // only hand bones with a joint beyond the right or bottom border can tell the difference.)
    let p0 = ((p1.0 as i64) << XY_SHIFT, (p1.1 as i64) << XY_SHIFT);
    let p1 = ((p2.0 as i64) << XY_SHIFT, (p2.1 as i64) << XY_SHIFT);
    let inv = 1.0 / XY_ONE as f64;
    let dx = (p0.0 - p1.0) as f64 * inv;
    let dy = (p1.1 - p0.1) as f64 * inv;
    let r = dx * dx + dy * dy;
    let odd = (thickness & 1) as f64;
    let thick_fixed = (thickness as i64) << (XY_SHIFT - 1);
    if r.abs() > f64::EPSILON {
        let r = (thick_fixed as f64 + odd * XY_ONE as f64 * 0.5) / r.sqrt();
        let dp = (cv_round(dy * r), cv_round(dx * r));
        let pts = [
            (p0.0 + dp.0, p0.1 + dp.1),
            (p0.0 - dp.0, p0.1 - dp.1),
            (p1.0 - dp.0, p1.1 - dp.1),
            (p1.0 + dp.0, p1.1 + dp.1),
        ];
        fill_convex_poly_fixed(canvas, &pts, XY_SHIFT, color);
    }
    let cap_radius = ((thick_fixed + (XY_ONE >> 1)) >> XY_SHIFT) as i32;
    for p in [p0, p1] {
        let c = (
            ((p.0 + (XY_ONE >> 1)) >> XY_SHIFT) as i32,
            ((p.1 + (XY_ONE >> 1)) >> XY_SHIFT) as i32,
        );
        circle_impl(canvas, c, cap_radius, color, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank(w: u32, h: u32) -> Vec<u8> {
        vec![0; (w * h * 3) as usize]
    }

    fn lit(buf: &[u8], w: u32) -> Vec<(u32, u32)> {
        buf.chunks(3)
            .enumerate()
            .filter(|(_, p)| p.iter().any(|&c| c != 0))
            .map(|(i, _)| (i as u32 % w, i as u32 / w))
            .collect()
    }

    #[test]
    fn sin_table_matches_opencv_literals() {
        let t = sin_table();
        // Literals copied from OpenCV's drawing.cpp SinTable.
        assert_eq!(t[1], 0.0174524f32);
        assert_eq!(t[30], 0.5f32);
        assert_eq!(t[89], 0.9998477f32);
        assert_eq!(t[90], 1.0f32);
        assert_eq!(t[181], -0.0174524f32);
        assert_eq!(t[450], 1.0f32);
    }

    #[test]
    fn ellipse2poly_axis_aligned_circle() {
        let pts = ellipse2poly((10, 10), (3, 3), 0, 0, 360, 90);
        assert_eq!(pts, vec![(13, 10), (10, 13), (7, 10), (10, 7), (13, 10)]);
    }

    #[test]
    fn ellipse2poly_degenerate_is_two_centres() {
        assert_eq!(
            ellipse2poly((5, 6), (0, 0), 0, 0, 360, 1),
            vec![(5, 6), (5, 6)]
        );
    }

    #[test]
    fn filled_circle_radius_one_is_a_plus() {
        let mut buf = blank(5, 5);
        let mut c = Canvas::new(5, 5, &mut buf);
        fill_circle(&mut c, (2, 2), 1, [255, 255, 255]);
        let mut got = lit(&buf, 5);
        got.sort();
        assert_eq!(got, vec![(1, 2), (2, 1), (2, 2), (2, 3), (3, 2)]);
    }

    #[test]
    fn circle_clipped_at_the_border_stays_inside() {
        let mut buf = blank(4, 4);
        let mut c = Canvas::new(4, 4, &mut buf);
        fill_circle(&mut c, (0, 0), 4, [1, 2, 3]);
        assert!(lit(&buf, 4).contains(&(0, 0)));
    }

    #[test]
    fn line8_is_connected_and_covers_endpoints() {
        let mut buf = blank(20, 20);
        let mut c = Canvas::new(20, 20, &mut buf);
        line8(&mut c, (15, 2), (1, 9), [9, 9, 9]);
        let got = lit(&buf, 20);
        assert!(got.contains(&(15, 2)) && got.contains(&(1, 9)));
        assert_eq!(got.len(), 15); // one pixel per column along the major axis
    }

    #[test]
    fn clip_line_rejects_outside_segments() {
        let (mut a, mut b) = ((-5i64, -5i64), (-1i64, -9i64));
        assert!(!clip_line(10, 10, &mut a, &mut b));
        let (mut a, mut b) = ((-5i64, 5i64), (15i64, 5i64));
        assert!(clip_line(10, 10, &mut a, &mut b));
        assert_eq!((a, b), ((0, 5), (9, 5)));
    }
}
