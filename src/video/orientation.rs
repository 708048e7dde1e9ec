//! Display orientation: turning decoded pictures upright.
//!
//! Phones store portrait video as landscape pictures plus a display matrix (MP4 `tkhd`,
//! FFmpeg's `AV_PKT_DATA_DISPLAYMATRIX`) or an older `rotate` tag. The matrix maps a
//! stored pixel `(x, y)` to its displayed position `(a·x + c·y + tx, b·x + d·y + ty)`
//! (ISO/IEC 14496-12 §8.3.2, 16.16 fixed point for a, b, c, d). We snap it to the nearest
//! of the eight axis-aligned transforms (rotations by multiples of 90° and mirrors) and
//! apply that to the RGB frame, as FFmpeg's `-autorotate` does.

/// One of the eight axis-aligned pixel transforms: displayed `x' = a·x + c·y`,
/// `y' = b·x + d·y` (plus the offset that keeps coordinates non-negative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Orientation {
    a: i8,
    b: i8,
    c: i8,
    d: i8,
}

impl Default for Orientation {
    fn default() -> Self {
        Self::UPRIGHT
    }
}

fn sign(v: f64) -> i8 {
    if v < 0.0 {
        -1
    } else {
        1
    }
}

impl Orientation {
    pub const UPRIGHT: Orientation = Orientation {
        a: 1,
        b: 0,
        c: 0,
        d: 1,
    };

    /// From the nine 32-bit words of a display matrix side-data block.
    pub fn from_display_matrix(m: &[i32; 9]) -> Self {
        let (a, b, c, d) = (m[0] as f64, m[1] as f64, m[3] as f64, m[4] as f64);
        if a == 0.0 && b == 0.0 && c == 0.0 && d == 0.0 {
            return Self::UPRIGHT;
        }
        if a.abs() + d.abs() >= b.abs() + c.abs() {
            Self {
                a: sign(a),
                b: 0,
                c: 0,
                d: sign(d),
            }
        } else {
            Self {
                a: 0,
                b: sign(b),
                c: sign(c),
                d: 0,
            }
        }
    }

    /// From raw side-data bytes (nine native-endian i32); `None` if the size is wrong.
    pub fn from_display_matrix_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < 36 {
            return None;
        }
        let mut m = [0i32; 9];
        for (i, word) in m.iter_mut().enumerate() {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[i * 4..i * 4 + 4]);
            *word = i32::from_ne_bytes(b);
        }
        Some(Self::from_display_matrix(&m))
    }

    /// From a legacy `rotate` tag: degrees clockwise, snapped to a multiple of 90.
    pub fn from_clockwise_degrees(degrees: i64) -> Self {
        let quarter = ((degrees as f64 / 90.0).round() as i64).rem_euclid(4);
        match quarter {
            0 => Self::UPRIGHT,
            1 => Self {
                a: 0,
                b: 1,
                c: -1,
                d: 0,
            },
            2 => Self {
                a: -1,
                b: 0,
                c: 0,
                d: -1,
            },
            _ => Self {
                a: 0,
                b: -1,
                c: 1,
                d: 0,
            },
        }
    }

    /// Clockwise rotation in degrees (0, 90, 180 or 270), as `ffprobe` reports the
    /// negated "rotation of X degrees" of the display matrix.
    pub fn rotation_degrees(self) -> i32 {
        // atan2(b, a) is the matrix's counter-clockwise angle in screen coordinates
        // (y down), which is the clockwise angle seen by the viewer.
        let angle = (self.b as f64).atan2(self.a as f64).to_degrees();
        ((angle.round() as i32) % 360 + 360) % 360
    }

    /// Whether the transform includes a mirror image (negative determinant).
    pub fn is_mirrored(self) -> bool {
        (self.a as i32 * self.d as i32 - self.b as i32 * self.c as i32) < 0
    }

    pub fn is_upright(self) -> bool {
        self == Self::UPRIGHT
    }

    /// Whether width and height trade places.
    pub fn swaps_axes(self) -> bool {
        self.a == 0
    }

    /// Displayed size of a `width`×`height` stored picture.
    pub fn display_size(self, width: u32, height: u32) -> (u32, u32) {
        if self.swaps_axes() {
            (height, width)
        } else {
            (width, height)
        }
    }

    /// Writes the displayed version of the tight RGB24 picture `src` into `dst`.
    pub fn apply_rgb(self, src: &[u8], width: u32, height: u32, dst: &mut Vec<u8>) {
        let (w, h) = (width as usize, height as usize);
        debug_assert_eq!(src.len(), w * h * 3);
        let (out_w, out_h) = self.display_size(width, height);
        let (out_w, out_h) = (out_w as i64, out_h as i64);
        dst.clear();
        dst.resize(src.len(), 0);
        let (a, b, c, d) = (self.a as i64, self.b as i64, self.c as i64, self.d as i64);
        let off_x = if a < 0 || c < 0 { out_w - 1 } else { 0 };
        let off_y = if b < 0 || d < 0 { out_h - 1 } else { 0 };
        for y in 0..h as i64 {
            let row = &src[y as usize * w * 3..(y as usize + 1) * w * 3];
            for x in 0..w as i64 {
                let dx = a * x + c * y + off_x;
                let dy = b * x + d * y + off_y;
                let di = ((dy * out_w + dx) * 3) as usize;
                let si = x as usize * 3;
                dst[di..di + 3].copy_from_slice(&row[si..si + 3]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: i32 = 1 << 16;
    const W_ONE: i32 = 1 << 30;

    /// A 3×2 picture whose pixels are numbered 0..6 row by row (value in every channel).
    fn picture() -> Vec<u8> {
        (0u8..6).flat_map(|v| [v, v, v]).collect()
    }

    fn displayed(o: Orientation) -> (u32, u32, Vec<u8>) {
        let mut out = Vec::new();
        o.apply_rgb(&picture(), 3, 2, &mut out);
        let (w, h) = o.display_size(3, 2);
        (w, h, out.chunks(3).map(|p| p[0]).collect())
    }

    #[test]
    fn identity_matrix_is_upright() {
        let m = [ONE, 0, 0, 0, ONE, 0, 0, 0, W_ONE];
        let o = Orientation::from_display_matrix(&m);
        assert!(o.is_upright());
        assert_eq!(o.rotation_degrees(), 0);
        assert_eq!(displayed(o), (3, 2, vec![0, 1, 2, 3, 4, 5]));
    }

    #[test]
    fn rotate_90_clockwise() {
        // What `ffmpeg -metadata:s:v rotate=90` writes (ffprobe: "rotation of -90.00").
        let m = [0, ONE, 0, -ONE, 0, 0, 0, 0, W_ONE];
        let o = Orientation::from_display_matrix(&m);
        assert_eq!(o, Orientation::from_clockwise_degrees(90));
        assert_eq!(o.rotation_degrees(), 90);
        assert!(!o.is_mirrored());
        // 0 1 2      3 0
        // 3 4 5  ->  4 1
        //            5 2
        assert_eq!(displayed(o), (2, 3, vec![3, 0, 4, 1, 5, 2]));
    }

    #[test]
    fn rotate_180_and_270() {
        let o180 = Orientation::from_clockwise_degrees(180);
        assert_eq!(o180.rotation_degrees(), 180);
        assert_eq!(displayed(o180), (3, 2, vec![5, 4, 3, 2, 1, 0]));
        let o270 = Orientation::from_clockwise_degrees(-90);
        assert_eq!(o270.rotation_degrees(), 270);
        // 0 1 2      2 5
        // 3 4 5  ->  1 4
        //            0 3
        assert_eq!(displayed(o270), (2, 3, vec![2, 5, 1, 4, 0, 3]));
        let m = [0, -ONE, 0, ONE, 0, 0, 0, 0, W_ONE];
        assert_eq!(Orientation::from_display_matrix(&m), o270);
    }

    #[test]
    fn mirror_matrix() {
        // Horizontal flip: x' = -x.
        let m = [-ONE, 0, 0, 0, ONE, 0, 0, 0, W_ONE];
        let o = Orientation::from_display_matrix(&m);
        assert!(o.is_mirrored());
        assert_eq!(displayed(o), (3, 2, vec![2, 1, 0, 5, 4, 3]));
    }

    #[test]
    fn near_axis_matrices_snap() {
        // A rotation of 88° (cos ≈ 0.035, sin ≈ 0.999) is treated as 90°.
        let (s, c) = (88f64.to_radians().sin(), 88f64.to_radians().cos());
        let m = [
            (c * ONE as f64) as i32,
            (s * ONE as f64) as i32,
            0,
            (-s * ONE as f64) as i32,
            (c * ONE as f64) as i32,
            0,
            0,
            0,
            W_ONE,
        ];
        assert_eq!(Orientation::from_display_matrix(&m).rotation_degrees(), 90);
        assert!(Orientation::from_display_matrix(&[0; 9]).is_upright());
    }

    #[test]
    fn bytes_are_parsed() {
        let m = [0, ONE, 0, -ONE, 0, 0, 0, 0, W_ONE];
        let bytes: Vec<u8> = m.iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert_eq!(
            Orientation::from_display_matrix_bytes(&bytes),
            Some(Orientation::from_clockwise_degrees(90))
        );
        assert_eq!(Orientation::from_display_matrix_bytes(&bytes[..20]), None);
    }

    #[test]
    fn tag_degrees_snap_and_wrap() {
        assert_eq!(
            Orientation::from_clockwise_degrees(450).rotation_degrees(),
            90
        );
        assert_eq!(
            Orientation::from_clockwise_degrees(-180).rotation_degrees(),
            180
        );
        assert_eq!(
            Orientation::from_clockwise_degrees(359).rotation_degrees(),
            0
        );
    }
}
