//! The inner loop shared by depthwise convolution and narrow (few-output-channel)
//! convolution: for one output row, `dst[ox][ch] += Σ_taps input[iy][ix][ch] · w[tap][ch]`.
//!
//! Runs under `pulp`'s runtime CPU dispatch (AVX-512 / AVX2+FMA / scalar). For stride 1 the
//! output pixels a tap touches form one contiguous run of floats in both the output row and
//! the input row, so the run is processed in vector-aligned blocks of `P` pixels against a
//! weight tile that repeats the tap's `c` weights `P` times (`P·c` a multiple of 16 floats).

use pulp::{Arch, Simd, WithSimd};

use crate::preprocess::tflite::padding::{source_index, valid_outputs, AxisWindow};

/// Widest vector we dispatch to (AVX-512: 16 f32); tiles are multiples of it.
const MAX_LANES: usize = 16;

/// Per-tap weights, each repeated to a vector-aligned tile.
#[derive(Debug, Clone)]
pub struct TapTiles {
    channels: usize,
    tile_len: usize,
    /// `[tap][tile_len]`.
    tiles: Vec<f32>,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl TapTiles {
    /// `weights` is `[taps][channels]`.
    pub fn new(weights: &[f32], channels: usize) -> Self {
        assert!(
            channels > 0 && weights.len() % channels == 0,
            "weights do not split into taps"
        );
        let tile_len = channels / gcd(channels, MAX_LANES) * MAX_LANES;
        let repeat = tile_len / channels;
        let tiles = weights
            .chunks_exact(channels)
            .flat_map(|tap| tap.iter().copied().cycle().take(tap.len() * repeat))
            .collect();
        TapTiles {
            channels,
            tile_len,
            tiles,
        }
    }

    fn tile(&self, tap: usize) -> &[f32] {
        &self.tiles[tap * self.tile_len..][..self.tile_len]
    }
}

/// Filter geometry of one layer (input `h × w × c`, output `oh × ow`).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub h: usize,
    pub w: usize,
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    pub y: AxisWindow,
    pub x: AxisWindow,
}

/// Accumulates the taps of output row `oy` of `image` (`h·w·c` floats) into `dst` (`ow·c`).
pub fn accumulate_row(
    dst: &mut [f32],
    image: &[f32],
    oy: usize,
    window: &Window,
    tiles: &TapTiles,
) {
    Arch::new().dispatch(RowKernel {
        dst,
        image,
        oy,
        window,
        tiles,
    });
}

struct RowKernel<'a> {
    dst: &'a mut [f32],
    image: &'a [f32],
    oy: usize,
    window: &'a Window,
    tiles: &'a TapTiles,
}

impl WithSimd for RowKernel<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let RowKernel {
            dst,
            image,
            oy,
            window: g,
            tiles,
        } = self;
        let c = tiles.channels;
        let (kh, kw) = g.kernel;
        for ky in 0..kh {
            let Some(iy) = source_index(oy, ky, g.stride.0, g.dilation.0, g.y.pad_before, g.h)
            else {
                continue;
            };
            let src_row = &image[iy * g.w * c..][..g.w * c];
            for kx in 0..kw {
                let tile = tiles.tile(ky * kw + kx);
                let (lo, hi) =
                    valid_outputs(kx, g.stride.1, g.dilation.1, g.x.pad_before, g.w, g.x.out);
                if lo >= hi {
                    continue;
                }
                let first_ix = lo * g.stride.1 + kx * g.dilation.1 - g.x.pad_before;
                let dst_run = &mut dst[lo * c..hi * c];
                if g.stride.1 == 1 {
                    let src_run = &src_row[first_ix * c..][..dst_run.len()];
                    contiguous_fma(simd, dst_run, src_run, tile);
                } else {
                    let step = g.stride.1 * c;
                    for (p, px) in dst_run.chunks_exact_mut(c).enumerate() {
                        let src = &src_row[(first_ix * c + p * step)..][..c];
                        contiguous_fma(simd, px, src, &tile[..c]);
                    }
                }
            }
        }
    }
}

/// `dst[i] += src[i] · tile[i mod tile.len()]`, where `dst.len()` is a multiple of the
/// channel count and `tile` repeats the channel weights.
#[inline(always)]
fn contiguous_fma<S: Simd>(simd: S, dst: &mut [f32], src: &[f32], tile: &[f32]) {
    let t = tile.len();
    let mut dst_blocks = dst.chunks_exact_mut(t);
    let mut src_blocks = src.chunks_exact(t);
    let (tile_vecs, tile_tail) = S::as_simd_f32s(tile);
    for (d, s) in (&mut dst_blocks).zip(&mut src_blocks) {
        let (dv, dt) = S::as_mut_simd_f32s(d);
        let (sv, st) = S::as_simd_f32s(s);
        for ((d, s), w) in dv.iter_mut().zip(sv).zip(tile_vecs) {
            *d = simd.mul_add_e_f32s(*s, *w, *d);
        }
        for ((d, s), w) in dt.iter_mut().zip(st).zip(tile_tail) {
            *d += s * w;
        }
    }
    for ((d, s), w) in dst_blocks
        .into_remainder()
        .iter_mut()
        .zip(src_blocks.remainder())
        .zip(tile)
    {
        *d += s * w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::tflite::padding::{axis_window, Padding};

    #[test]
    fn tiles_are_vector_aligned_repeats() {
        let t = TapTiles::new(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3);
        assert_eq!(t.tile_len, 48);
        assert_eq!(&t.tile(1)[..6], &[4.0, 5.0, 6.0, 4.0, 5.0, 6.0]);
        assert_eq!(TapTiles::new(&[0.0; 32], 32).tile_len, 32);
        assert_eq!(TapTiles::new(&[0.0; 24], 24).tile_len, 48);
    }

    #[test]
    fn row_matches_direct_sum() {
        for (c, stride, padding) in [
            (3, 1, Padding::Same),
            (8, 1, Padding::Same),
            (20, 2, Padding::Same),
            (16, 2, Padding::Valid),
            (5, 1, Padding::Valid),
        ] {
            let (h, w, k) = (5, 23, 3);
            let y = axis_window(padding, h, k, stride, 1).unwrap();
            let x = axis_window(padding, w, k, stride, 1).unwrap();
            let g = Window {
                h,
                w,
                kernel: (k, k),
                stride: (stride, stride),
                dilation: (1, 1),
                y,
                x,
            };
            let image: Vec<f32> = (0..h * w * c).map(|i| (i as f32 * 0.37).sin()).collect();
            let weights: Vec<f32> = (0..k * k * c).map(|i| (i as f32 * 0.91).cos()).collect();
            let tiles = TapTiles::new(&weights, c);
            for oy in 0..y.out {
                let mut row = vec![0.5f32; x.out * c];
                accumulate_row(&mut row, &image, oy, &g, &tiles);
                for ox in 0..x.out {
                    for ch in 0..c {
                        let mut want = 0.5f32;
                        for ky in 0..k {
                            for kx in 0..k {
                                let (Some(iy), Some(ix)) = (
                                    source_index(oy, ky, stride, 1, y.pad_before, h),
                                    source_index(ox, kx, stride, 1, x.pad_before, w),
                                ) else {
                                    continue;
                                };
                                want +=
                                    image[(iy * w + ix) * c + ch] * weights[(ky * k + kx) * c + ch];
                            }
                        }
                        let got = row[ox * c + ch];
                        assert!(
                            (got - want).abs() < 1e-5,
                            "c{c} s{stride} ({oy},{ox},{ch}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
