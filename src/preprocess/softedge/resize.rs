//! `cv2.resize` for u8 images (1–4 interleaved channels), as ControlNet's annotators call it:
//! `INTER_AREA` to shrink the input, `INTER_LANCZOS4` to enlarge it, `INTER_LINEAR` for the map.
//!
//! Follows OpenCV's `cv::hal::resize` CPU path (imgproc/src/resize.cpp, 4.x/5.x):
//! - same size: copy;
//! - `INTER_LINEAR` at exactly 1/2 in both axes becomes `INTER_AREA`;
//! - `INTER_AREA` when shrinking both axes: box average, exact integer factors by integer sums
//!   ("area fast"), other factors with fractional cell weights in f32 (`resizeArea_`);
//! - otherwise separable fixed-point filtering with 11-bit coefficients: 2 taps for linear (and
//!   for `INTER_AREA` when enlarging, with its own tap positions), 8 for Lanczos-4; borders
//!   repeat the edge pixel. The vertical linear pass rounds like OpenCV's x86 SIMD kernel
//!   (`VResizeLinearVec_32s8u`), which is what `cv2` wheels run.
//! Checked bit-for-bit against opencv-python-headless 5.0.0.93 (tests/hed_resize.rs).

/// The OpenCV interpolation flags the annotators use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    /// `cv2.INTER_AREA`
    Area,
    /// `cv2.INTER_LINEAR`
    Linear,
    /// `cv2.INTER_LANCZOS4`
    Lanczos4,
}

/// Fixed-point scale of the filter coefficients (`INTER_RESIZE_COEF_SCALE`).
const COEF_SCALE: f32 = 2048.0;

/// An interleaved u8 image: `width × height` pixels of `channels` bytes, row-major.
#[derive(Clone, Copy, Debug)]
pub struct ImageU8<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub channels: usize,
}

/// `cv2.resize(image, (width, height), interpolation=...)`.
///
/// Panics if `image.data` does not hold `width·height·channels` bytes, if `channels` is not
/// 1–4, or if a size is zero (callers validate their inputs first).
pub fn resize(
    image: ImageU8<'_>,
    width: usize,
    height: usize,
    interpolation: Interpolation,
) -> Vec<u8> {
    let ImageU8 {
        data,
        width: sw,
        height: sh,
        channels: cn,
    } = image;
    assert!((1..=4).contains(&cn), "resize: {cn} channels");
    assert_eq!(data.len(), sw * sh * cn, "resize: image size");
    assert!(
        sw > 0 && sh > 0 && width > 0 && height > 0,
        "resize: empty image"
    );
    if (sw, sh) == (width, height) {
        return data.to_vec();
    }
    let inv_scale_x = width as f64 / sw as f64;
    let inv_scale_y = height as f64 / sh as f64;
    let scale_x = 1.0 / inv_scale_x;
    let scale_y = 1.0 / inv_scale_y;
    let iscale_x = scale_x.round_ties_even() as i64;
    let iscale_y = scale_y.round_ties_even() as i64;
    let area_fast = (scale_x - iscale_x as f64).abs() < f64::EPSILON
        && (scale_y - iscale_y as f64).abs() < f64::EPSILON;

    let mut interpolation = interpolation;
    if interpolation == Interpolation::Linear && area_fast && iscale_x == 2 && iscale_y == 2 {
        interpolation = Interpolation::Area;
    }
    if interpolation == Interpolation::Area && scale_x >= 1.0 && scale_y >= 1.0 {
        return if area_fast {
            area_fast_resize(image, width, height, iscale_x as usize, iscale_y as usize)
        } else {
            area_resize(image, width, height, scale_x, scale_y)
        };
    }
    let x_taps = Taps::new(sw, width, scale_x, inv_scale_x, interpolation, true);
    let y_taps = Taps::new(sh, height, scale_y, inv_scale_y, interpolation, false);
    separable_resize(image, width, height, &x_taps, &y_taps, interpolation)
}

/// For each output position along one axis: the first source tap and the fixed-point weights.
struct Taps {
    size: usize,
    first: Vec<i64>,
    weights: Vec<i32>,
}

impl Taps {
    fn new(
        src_size: usize,
        dst_size: usize,
        scale: f64,
        inv_scale: f64,
        interpolation: Interpolation,
        horizontal: bool,
    ) -> Self {
        let size = match interpolation {
            Interpolation::Lanczos4 => 8,
            _ => 2,
        };
        let half = size as i64 / 2;
        let mut first = Vec::with_capacity(dst_size);
        let mut weights = Vec::with_capacity(dst_size * size);
        for d in 0..dst_size {
            let (mut s, mut f) = if interpolation == Interpolation::Area {
                // Enlarging with INTER_AREA: a pixel's weight is the overlap with its cell.
                let s = (d as f64 * scale).floor() as i64;
                let f = ((d + 1) as f64 - (s + 1) as f64 * inv_scale) as f32;
                (s, if f <= 0.0 { 0.0 } else { f - f.floor() })
            } else {
                let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
                let s = f.floor() as i64;
                (s, f - s as f32)
            };
            // OpenCV pins the 2-tap filters to the edge pixel along x only; along y, the taps
            // are clamped to the image but keep their (rounded) weights.
            if horizontal && interpolation != Interpolation::Lanczos4 {
                if s < 0 {
                    (s, f) = (0, 0.0);
                }
                if s >= src_size as i64 - 1 {
                    (s, f) = (src_size as i64 - 1, 0.0);
                }
            }
            let coefficients: [f32; 8] = match interpolation {
                Interpolation::Lanczos4 => lanczos4(f),
                _ => [1.0 - f, f, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            };
            first.push(s - half + 1);
            weights.extend(
                coefficients[..size]
                    .iter()
                    .map(|c| (c * COEF_SCALE).round_ties_even() as i32),
            );
        }
        Self {
            size,
            first,
            weights,
        }
    }
}

/// OpenCV's `interpolateLanczos4`: the 8 windowed-sinc weights at offset `x` ∈ [0, 1),
/// normalised to sum 1 (f64 trigonometry, f32 weights as OpenCV stores them).
fn lanczos4(x: f32) -> [f32; 8] {
    const S45: f64 = std::f64::consts::FRAC_1_SQRT_2;
    const CS: [[f64; 2]; 8] = [
        [1.0, 0.0],
        [-S45, -S45],
        [0.0, 1.0],
        [S45, -S45],
        [-1.0, 0.0],
        [S45, S45],
        [0.0, -1.0],
        [-S45, S45],
    ];
    let mut coefficients = [0f32; 8];
    if x < f32::EPSILON {
        coefficients[3] = 1.0;
        return coefficients;
    }
    let y0 = -((x + 3.0) as f64) * std::f64::consts::PI * 0.25;
    let (s0, c0) = (y0.sin(), y0.cos());
    let mut sum = 0f32;
    for (i, c) in coefficients.iter_mut().enumerate() {
        let y = -((x + 3.0 - i as f32) as f64) * std::f64::consts::PI * 0.25;
        *c = ((CS[i][0] * s0 + CS[i][1] * c0) / (y * y)) as f32;
        sum += *c;
    }
    let inv = 1.0 / sum;
    for c in coefficients.iter_mut() {
        *c *= inv;
    }
    coefficients
}

fn separable_resize(
    image: ImageU8<'_>,
    width: usize,
    height: usize,
    x_taps: &Taps,
    y_taps: &Taps,
    interpolation: Interpolation,
) -> Vec<u8> {
    let ImageU8 {
        data,
        width: sw,
        height: sh,
        channels: cn,
    } = image;
    let clamp = |i: i64, n: usize| i.clamp(0, n as i64 - 1) as usize;
    // Horizontal pass over every source row: sums of pixel × 11-bit weight.
    let row_len = width * cn;
    let mut rows = vec![0i32; sh * row_len];
    for (src_row, dst_row) in data
        .chunks_exact(sw * cn)
        .zip(rows.chunks_exact_mut(row_len))
    {
        for dx in 0..width {
            let weights = &x_taps.weights[dx * x_taps.size..(dx + 1) * x_taps.size];
            for c in 0..cn {
                dst_row[dx * cn + c] = weights
                    .iter()
                    .enumerate()
                    .map(|(k, &w)| {
                        let sx = clamp(x_taps.first[dx] + k as i64, sw);
                        src_row[sx * cn + c] as i32 * w
                    })
                    .sum();
            }
        }
    }
    // Vertical pass.
    let mut out = vec![0u8; height * row_len];
    for (dy, dst_row) in out.chunks_exact_mut(row_len).enumerate() {
        let weights = &y_taps.weights[dy * y_taps.size..(dy + 1) * y_taps.size];
        let source_rows: Vec<&[i32]> = (0..y_taps.size)
            .map(|k| {
                let sy = clamp(y_taps.first[dy] + k as i64, sh);
                &rows[sy * row_len..(sy + 1) * row_len]
            })
            .collect();
        for (i, v) in dst_row.iter_mut().enumerate() {
            let value = if interpolation == Interpolation::Lanczos4 {
                let sum: i64 = (0..8)
                    .map(|k| source_rows[k][i] as i64 * weights[k] as i64)
                    .sum();
                (sum + (1 << 21)) >> 22
            } else {
                // VResizeLinearVec_32s8u: 16-bit high products of (row >> 4) and the weight.
                let high = |s: i32, b: i32| (((s >> 4) as i64 * b as i64) >> 16) as i32;
                ((high(source_rows[0][i], weights[0]) + high(source_rows[1][i], weights[1]) + 2)
                    >> 2) as i64
            };
            *v = value.clamp(0, 255) as u8;
        }
    }
    out
}

/// Integer shrink factors: the rounded mean of each `sx × sy` cell (`resizeAreaFast_`; the
/// 2×2 case is OpenCV's SIMD `(sum + 2) >> 2`, the others `round(sum · (1/area))` in f32).
fn area_fast_resize(
    image: ImageU8<'_>,
    width: usize,
    height: usize,
    sx: usize,
    sy: usize,
) -> Vec<u8> {
    let ImageU8 {
        data,
        width: sw,
        channels: cn,
        ..
    } = image;
    let scale = 1.0f32 / (sx * sy) as f32;
    let mut out = vec![0u8; width * height * cn];
    for dy in 0..height {
        for dx in 0..width {
            for c in 0..cn {
                let mut sum = 0u32;
                for y in dy * sy..(dy + 1) * sy {
                    for x in dx * sx..(dx + 1) * sx {
                        sum += data[(y * sw + x) * cn + c] as u32;
                    }
                }
                out[(dy * width + dx) * cn + c] = if (sx, sy) == (2, 2) {
                    ((sum + 2) >> 2) as u8
                } else {
                    (sum as f32 * scale).round_ties_even().clamp(0.0, 255.0) as u8
                };
            }
        }
    }
    out
}

/// One source pixel's share of one output cell along an axis.
struct AreaWeight {
    dst: usize,
    src: usize,
    alpha: f32,
}

/// OpenCV's `computeResizeAreaTab`: for each output cell `[d·scale, (d+1)·scale)`, the source
/// pixels it covers and the fraction of the cell each covers.
fn area_weights(src_size: usize, dst_size: usize, scale: f64) -> Vec<AreaWeight> {
    let mut tab = Vec::with_capacity(src_size * 2);
    for d in 0..dst_size {
        let f1 = d as f64 * scale;
        let f2 = f1 + scale;
        let cell = scale.min(src_size as f64 - f1);
        let mut s2 = f2.floor() as i64;
        let mut s1 = f1.ceil() as i64;
        s2 = s2.min(src_size as i64 - 1);
        s1 = s1.min(s2);
        if s1 as f64 - f1 > 1e-3 {
            tab.push(AreaWeight {
                dst: d,
                src: (s1 - 1) as usize,
                alpha: ((s1 as f64 - f1) / cell) as f32,
            });
        }
        for s in s1..s2 {
            tab.push(AreaWeight {
                dst: d,
                src: s as usize,
                alpha: (1.0 / cell) as f32,
            });
        }
        if f2 - s2 as f64 > 1e-3 {
            tab.push(AreaWeight {
                dst: d,
                src: s2 as usize,
                alpha: ((f2 - s2 as f64).min(1.0).min(cell) / cell) as f32,
            });
        }
    }
    tab
}

/// Non-integer shrink (`resizeArea_<uchar, float>`): per source row, accumulate the row's
/// horizontal cell sums, then add them into the output row with the row's vertical weight; the
/// f32 operation order is OpenCV's, so the rounded results agree bit for bit.
fn area_resize(
    image: ImageU8<'_>,
    width: usize,
    height: usize,
    scale_x: f64,
    scale_y: f64,
) -> Vec<u8> {
    let ImageU8 {
        data,
        width: sw,
        height: sh,
        channels: cn,
    } = image;
    let x_tab = area_weights(sw, width, scale_x);
    let y_tab = area_weights(sh, height, scale_y);
    let row_len = width * cn;
    let mut out = vec![0u8; height * row_len];
    let mut sum = vec![0f32; row_len];
    let mut buf = vec![0f32; row_len];
    let mut current: Option<usize> = None;
    for yw in &y_tab {
        buf.fill(0.0);
        let src_row = &data[yw.src * sw * cn..(yw.src + 1) * sw * cn];
        for xw in &x_tab {
            for c in 0..cn {
                buf[xw.dst * cn + c] += src_row[xw.src * cn + c] as f32 * xw.alpha;
            }
        }
        if current != Some(yw.dst) {
            if let Some(prev) = current {
                store_row(&sum, &mut out[prev * row_len..(prev + 1) * row_len]);
            }
            for (s, b) in sum.iter_mut().zip(&buf) {
                *s = yw.alpha * b;
            }
            current = Some(yw.dst);
        } else {
            for (s, b) in sum.iter_mut().zip(&buf) {
                *s += yw.alpha * b;
            }
        }
    }
    if let Some(prev) = current {
        store_row(&sum, &mut out[prev * row_len..(prev + 1) * row_len]);
    }
    out
}

/// `saturate_cast<uchar>(float)`: round half to even, then clamp.
fn store_row(sum: &[f32], dst: &mut [u8]) {
    for (d, s) in dst.iter_mut().zip(sum) {
        *d = s.round_ties_even().clamp(0.0, 255.0) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(data: &[u8], width: usize, height: usize, channels: usize) -> ImageU8<'_> {
        ImageU8 {
            data,
            width,
            height,
            channels,
        }
    }

    #[test]
    fn same_size_is_a_copy() {
        let data: Vec<u8> = (0..24).collect();
        for interpolation in [
            Interpolation::Area,
            Interpolation::Linear,
            Interpolation::Lanczos4,
        ] {
            assert_eq!(resize(image(&data, 4, 2, 3), 4, 2, interpolation), data);
        }
    }

    #[test]
    fn constant_images_stay_constant() {
        let data = vec![77u8; 9 * 7 * 3];
        for (w, h) in [(4, 3), (20, 15), (9, 14), (3, 7)] {
            for interpolation in [
                Interpolation::Area,
                Interpolation::Linear,
                Interpolation::Lanczos4,
            ] {
                let out = resize(image(&data, 9, 7, 3), w, h, interpolation);
                assert!(
                    out.iter().all(|&v| v == 77),
                    "{interpolation:?} to {w}x{h}: {out:?}"
                );
            }
        }
    }

    #[test]
    fn halving_averages_2x2_cells_rounding_half_up() {
        // cells: (0+1+2+3)/4 = 1.5 → 2, (4+4+5+5)/4 = 4.5 → 5
        let data = [0, 1, 4, 4, 2, 3, 5, 5];
        assert_eq!(
            resize(image(&data, 4, 2, 1), 2, 1, Interpolation::Area),
            [2, 5]
        );
        // INTER_LINEAR at exactly 1/2 is the same area average.
        assert_eq!(
            resize(image(&data, 4, 2, 1), 2, 1, Interpolation::Linear),
            [2, 5]
        );
    }

    #[test]
    fn lanczos_weights_sum_to_one_and_are_an_impulse_at_zero() {
        assert_eq!(lanczos4(0.0), [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        for x in [0.1f32, 0.25, 0.5, 0.9] {
            let c = lanczos4(x);
            assert!((c.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            // The nearer of the two centre taps dominates.
            assert_eq!(c[3] > c[4], x < 0.5, "x = {x}: {c:?}");
        }
    }

    #[test]
    fn area_weights_cover_each_cell_once() {
        for (src, dst) in [(10usize, 3usize), (512, 192), (7, 5)] {
            let tab = area_weights(src, dst, src as f64 / dst as f64);
            for d in 0..dst {
                let total: f32 = tab.iter().filter(|w| w.dst == d).map(|w| w.alpha).sum();
                assert!((total - 1.0).abs() < 1e-5, "{src}->{dst} cell {d}: {total}");
            }
        }
    }
}
