//! The inner loop shared by depthwise convolution and narrow (few-output-channel)
//! convolution: for one output row, `dst[ox][ch] += Σ_taps input[iy][ix][ch] · w[tap][ch]`.
//!
//! Runs under `pulp`'s runtime CPU dispatch (AVX-512 / AVX2+FMA / scalar). For stride 1 the
//! output pixels a tap touches form one contiguous run of floats in both the output row and
//! the input row, so the run is processed in vector-aligned blocks of `P` pixels against a
//! weight tile that repeats the tap's `c` weights `P` times (`P·c` a multiple of 16 floats).

use pulp::{Arch, Simd, WithSimd};

use crate::tflite::padding::{source_index, valid_outputs, AxisWindow};

/// Widest vector we dispatch to (AVX-512: 16 f32); tiles are multiples of it.
const MAX_LANES: usize = 16;
/// Output vectors accumulated together in registers (one pass over the taps per block).
const BLOCK: usize = 8;
/// Tiles are made a multiple of a whole block when that keeps them this small.
const MAX_BLOCK_TILE: usize = 2048;

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
            channels > 0 && weights.len().is_multiple_of(channels),
            "weights do not split into taps"
        );
        let lcm = |a: usize, b: usize| a / gcd(a, b) * b;
        let tile_len = match lcm(channels, MAX_LANES * BLOCK) {
            whole_blocks if whole_blocks <= MAX_BLOCK_TILE => whole_blocks,
            _ => lcm(channels, MAX_LANES),
        };
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
        let rows: Vec<(usize, &[f32])> = (0..kh)
            .filter_map(|ky| {
                let iy = source_index(oy, ky, g.stride.0, g.dilation.0, g.y.pad_before, g.h)?;
                Some((ky, &image[iy * g.w * c..][..g.w * c]))
            })
            .collect();
        // Output pixels for which every horizontal tap lands inside the input.
        let (x_lo, x_hi) = (0..kw)
            .map(|kx| valid_outputs(kx, g.stride.1, g.dilation.1, g.x.pad_before, g.w, g.x.out))
            .fold((0, g.x.out), |(lo, hi), (l, h)| (lo.max(l), hi.min(h)));
        let lanes = S::F32_LANES;
        if x_lo < x_hi && g.stride.1 == 1 {
            interior_stride1(simd, dst, &rows, g, tiles, x_lo, x_hi);
        } else if x_lo < x_hi && c % lanes == 0 {
            interior_strided(simd, dst, &rows, g, tiles, x_lo, x_hi);
        } else {
            per_tap(simd, dst, &rows, g, tiles, 0, g.x.out);
            return;
        }
        per_tap(simd, dst, &rows, g, tiles, 0, x_lo);
        per_tap(simd, dst, &rows, g, tiles, x_hi, g.x.out);
    }
}

/// Stride 1, pixels `x_lo..x_hi`: the output run and each tap's input run are contiguous
/// and shifted copies of each other, so whole vectors of the flattened (pixel, channel) run
/// accumulate all taps in a register before one store.
#[inline(always)]
fn interior_stride1<S: Simd>(
    simd: S,
    dst: &mut [f32],
    rows: &[(usize, &[f32])],
    g: &Window,
    tiles: &TapTiles,
    x_lo: usize,
    x_hi: usize,
) {
    let c = tiles.channels;
    let kw = g.kernel.1;
    let len = (x_hi - x_lo) * c;
    let lanes = S::F32_LANES;
    let vectors = len / lanes;
    let tile_vectors = tiles.tile_len / lanes;
    // (input run, weight tile) per valid tap, as vectors.
    let mut taps: Vec<Tap<'_, S>> = Vec::with_capacity(rows.len() * kw);
    for &(ky, src_row) in rows {
        for kx in 0..kw {
            let first = x_lo + kx * g.dilation.1 - g.x.pad_before;
            let run = &src_row[first * c..][..vectors * lanes];
            taps.push((
                S::as_simd_f32s(run).0,
                S::as_simd_f32s(tiles.tile(ky * kw + kx)).0,
            ));
        }
    }
    let (out, tail) = dst[x_lo * c..x_hi * c].split_at_mut(vectors * lanes);
    let out_vecs = S::as_mut_simd_f32s(out).0;
    let mut j = 0;
    while j < vectors {
        let phase = j % tile_vectors;
        if j + BLOCK <= vectors && phase + BLOCK <= tile_vectors {
            block::<S, BLOCK>(simd, &mut out_vecs[j..j + BLOCK], &taps, j, phase);
            j += BLOCK;
        } else {
            block::<S, 1>(simd, &mut out_vecs[j..j + 1], &taps, j, phase);
            j += 1;
        }
    }
    // Fewer than one vector left: scalar.
    for (i, acc) in tail.iter_mut().enumerate() {
        let f = vectors * lanes + i;
        for &(ky, src_row) in rows {
            for kx in 0..kw {
                let first = x_lo + kx * g.dilation.1 - g.x.pad_before;
                *acc += src_row[first * c + f] * tiles.tile(ky * kw + kx)[f % tiles.tile_len];
            }
        }
    }
}

/// One filter tap as vectors: (input run, weight tile).
type Tap<'a, S> = (&'a [<S as Simd>::f32s], &'a [<S as Simd>::f32s]);

/// `out[i] += Σ_taps src[j + i] · w[phase + i]` for `i < B`, accumulators in registers.
#[inline(always)]
fn block<S: Simd, const B: usize>(
    simd: S,
    out: &mut [S::f32s],
    taps: &[Tap<'_, S>],
    j: usize,
    phase: usize,
) {
    let mut acc: [S::f32s; B] = std::array::from_fn(|i| out[i]);
    for (src, w) in taps {
        let src = &src[j..j + B];
        let w = &w[phase..phase + B];
        for i in 0..B {
            acc[i] = simd.mul_add_e_f32s(src[i], w[i], acc[i]);
        }
    }
    out[..B].copy_from_slice(&acc);
}

/// Stride > 1 with whole vectors per pixel: per output pixel and channel vector, all taps
/// accumulate in a register.
#[inline(always)]
fn interior_strided<S: Simd>(
    simd: S,
    dst: &mut [f32],
    rows: &[(usize, &[f32])],
    g: &Window,
    tiles: &TapTiles,
    x_lo: usize,
    x_hi: usize,
) {
    let c = tiles.channels;
    let kw = g.kernel.1;
    let vectors = c / S::F32_LANES;
    let mut taps: Vec<Tap<'_, S>> = Vec::with_capacity(rows.len() * kw);
    for ox in x_lo..x_hi {
        taps.clear();
        for &(ky, src_row) in rows {
            for kx in 0..kw {
                let ix = ox * g.stride.1 + kx * g.dilation.1 - g.x.pad_before;
                taps.push((
                    S::as_simd_f32s(&src_row[ix * c..][..c]).0,
                    S::as_simd_f32s(&tiles.tile(ky * kw + kx)[..c]).0,
                ));
            }
        }
        let px = S::as_mut_simd_f32s(&mut dst[ox * c..][..c]).0;
        let mut v = 0;
        while v < vectors {
            if v + BLOCK <= vectors {
                block::<S, BLOCK>(simd, &mut px[v..v + BLOCK], &taps, v, v);
                v += BLOCK;
            } else {
                block::<S, 1>(simd, &mut px[v..v + 1], &taps, v, v);
                v += 1;
            }
        }
    }
}

/// Any geometry, output pixels `from..to`: one pass over the output per tap.
#[inline(always)]
fn per_tap<S: Simd>(
    simd: S,
    dst: &mut [f32],
    rows: &[(usize, &[f32])],
    g: &Window,
    tiles: &TapTiles,
    from: usize,
    to: usize,
) {
    let c = tiles.channels;
    let kw = g.kernel.1;
    for &(ky, src_row) in rows {
        for kx in 0..kw {
            let tile = tiles.tile(ky * kw + kx);
            let (lo, hi) =
                valid_outputs(kx, g.stride.1, g.dilation.1, g.x.pad_before, g.w, g.x.out);
            let (lo, hi) = (lo.max(from), hi.min(to));
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
    use crate::tflite::padding::{axis_window, Padding};

    #[test]
    fn tiles_are_vector_aligned_repeats() {
        let t = TapTiles::new(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3);
        // lcm(3, 128) = 384 floats: whole 8-vector blocks.
        assert_eq!(t.tile_len, 384);
        assert_eq!(&t.tile(1)[..6], &[4.0, 5.0, 6.0, 4.0, 5.0, 6.0]);
        assert_eq!(&t.tile(1)[381..], &[4.0, 5.0, 6.0]);
        assert_eq!(TapTiles::new(&[0.0; 32], 32).tile_len, 128);
        assert_eq!(TapTiles::new(&[0.0; 144], 144).tile_len, 1152);
        // lcm(528, 128) is too large: only vector-aligned (lcm(528, 16) = 528).
        assert_eq!(TapTiles::new(&[0.0; 528], 528).tile_len, 528);
    }

    fn run_with<S: Simd>(
        simd: S,
        image: &[f32],
        oy: usize,
        window: &Window,
        tiles: &TapTiles,
        len: usize,
    ) -> Vec<f32> {
        let mut dst = vec![0.5f32; len];
        RowKernel {
            dst: &mut dst,
            image,
            oy,
            window,
            tiles,
        }
        .with_simd(simd);
        dst
    }

    #[test]
    fn row_matches_direct_sum() {
        // (channels, stride, dilation, padding, kernel, width): stride-1 runs, strided whole
        // vectors, strided partial vectors, dilation, and rows too narrow for any interior.
        for (c, stride, d, padding, k, w) in [
            (3, 1, 1, Padding::Same, 3, 23),
            (8, 1, 1, Padding::Same, 3, 23),
            (20, 2, 1, Padding::Same, 3, 23),
            (16, 2, 1, Padding::Valid, 3, 23),
            (32, 2, 1, Padding::Same, 5, 23),
            (5, 1, 1, Padding::Valid, 3, 23),
            (48, 1, 1, Padding::Same, 5, 23),
            (16, 1, 2, Padding::Same, 3, 23),
            (8, 1, 1, Padding::Same, 5, 3),
        ] {
            let h = 5;
            let y = axis_window(padding, h, k, stride, d).unwrap();
            let x = axis_window(padding, w, k, stride, d).unwrap();
            let g = Window {
                h,
                w,
                kernel: (k, k),
                stride: (stride, stride),
                dilation: (d, d),
                y,
                x,
            };
            let image: Vec<f32> = (0..h * w * c).map(|i| (i as f32 * 0.37).sin()).collect();
            let weights: Vec<f32> = (0..k * k * c).map(|i| (i as f32 * 0.91).cos()).collect();
            let tiles = TapTiles::new(&weights, c);
            for oy in 0..y.out {
                let mut row = vec![0.5f32; x.out * c];
                accumulate_row(&mut row, &image, oy, &g, &tiles);
                // The same generic code at other vector widths (scalar, 8 and 16 emulated lanes).
                for other in [
                    run_with(pulp::Scalar::new(), &image, oy, &g, &tiles, x.out * c),
                    run_with(pulp::Scalar256b, &image, oy, &g, &tiles, x.out * c),
                    run_with(pulp::Scalar512b, &image, oy, &g, &tiles, x.out * c),
                ] {
                    for (a, b) in other.iter().zip(&row) {
                        assert!((a - b).abs() < 1e-5, "c{c} s{stride} d{d}: {a} vs {b}");
                    }
                }
                for ox in 0..x.out {
                    for ch in 0..c {
                        let mut want = 0.5f32;
                        for ky in 0..k {
                            for kx in 0..k {
                                let (Some(iy), Some(ix)) = (
                                    source_index(oy, ky, stride, d, y.pad_before, h),
                                    source_index(ox, kx, stride, d, x.pad_before, w),
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
