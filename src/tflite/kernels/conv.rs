//! CONV_2D in NHWC: im2col (skipped for 1×1 stride-1 convs, which are a plain matmul) then
//! one GEMM against the OHWI weights, bias folded into the GEMM's output.

use super::parallel::for_each_row;

use super::activation::Activation;
use super::packed_gemm::{matmul_packed, PackedWeights};
use super::taps::{accumulate_row, TapTiles, Window};
use crate::alloc::uninit_f32;
use crate::tflite::array::Array;
use crate::tflite::padding::{source_index, spatial_windows, AxisWindow, Padding};

/// Below this many output channels the direct kernel beats im2col + GEMM.
const NARROW_OUTPUT: usize = 4;

/// Static parameters of one CONV_2D, weights kept in TFLite's OHWI order which is already
/// the `[out_channels × (kh·kw·in_channels)]` matrix the im2col rows multiply.
#[derive(Debug, Clone)]
pub struct Conv2d {
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    pub out_channels: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub in_channels: usize,
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    pub padding: Padding,
    /// `[(top, bottom), (left, right)]` zero padding of a PAD folded into this layer
    /// (overrides `padding`).
    pub explicit_padding: Option<[(usize, usize); 2]>,
    pub activation: Activation,
    /// The filter laid out for the kernel that runs it.
    prepared: Prepared,
}

#[derive(Debug, Clone)]
enum Prepared {
    /// Per output channel, its filter as per-tap tiles (few output channels).
    Narrow(Vec<TapTiles>),
    /// OHWI rows packed for the GEMM over im2col (or, for 1×1, the input itself).
    Packed(PackedWeights),
}

impl Conv2d {
    /// `weights` in TFLite's OHWI order, `shape` = (out, kh, kw, in).
    pub fn new(
        weights: Vec<f32>,
        bias: Vec<f32>,
        shape: (usize, usize, usize, usize),
        stride: (usize, usize),
        dilation: (usize, usize),
        padding: Padding,
        activation: Activation,
    ) -> Self {
        let (out_channels, kernel_h, kernel_w, in_channels) = shape;
        assert_eq!(
            weights.len(),
            out_channels * kernel_h * kernel_w * in_channels,
            "filter size"
        );
        let patch = kernel_h * kernel_w * in_channels;
        let prepared = if out_channels < NARROW_OUTPUT {
            Prepared::Narrow(
                weights
                    .chunks_exact(patch)
                    .map(|filter| TapTiles::new(filter, in_channels))
                    .collect(),
            )
        } else {
            Prepared::Packed(PackedWeights::new(&weights, &bias, out_channels, patch))
        };
        Conv2d {
            weights,
            bias,
            out_channels,
            kernel_h,
            kernel_w,
            in_channels,
            stride,
            dilation,
            padding,
            explicit_padding: None,
            activation,
            prepared,
        }
    }

    /// Input rows gathered into `[out_pixels × (kh·kw·c)]` patches; padding cells stay zero.
    fn im2col(&self, input: &Array, wy: AxisWindow, wx: AxisWindow) -> Vec<f32> {
        let (batch, h, w, c) = input.nhwc().expect("checked by run");
        let (oh, ow) = (wy.out, wx.out);
        let k = self.kernel_h * self.kernel_w * c;
        let mut cols = vec![0.0f32; batch * oh * ow * k];
        let (sy, sx) = self.stride;
        let (dy, dx) = self.dilation;
        for_each_row(&mut cols, ow * k, ow * k, |row, dst| {
            let (b, oy) = (row / oh, row % oh);
            for ky in 0..self.kernel_h {
                let Some(iy) = source_index(oy, ky, sy, dy, wy.pad_before, h) else {
                    continue;
                };
                let src_row = &input.data[((b * h + iy) * w) * c..][..w * c];
                let span = self.kernel_w * c;
                for ox in 0..ow {
                    // Undilated and inside the row: the kernel row is one contiguous run.
                    let first = (ox * sx).checked_sub(wx.pad_before);
                    if let Some(ix) = first.filter(|&ix| dx == 1 && ix + self.kernel_w <= w) {
                        let at = ox * k + ky * span;
                        dst[at..at + span].copy_from_slice(&src_row[ix * c..][..span]);
                        continue;
                    }
                    for kx in 0..self.kernel_w {
                        let Some(ix) = source_index(ox, kx, sx, dx, wx.pad_before, w) else {
                            continue;
                        };
                        let at = ox * k + (ky * self.kernel_w + kx) * c;
                        dst[at..at + c].copy_from_slice(&src_row[ix * c..][..c]);
                    }
                }
            }
        });
        cols
    }

    /// Very few output channels (segmentation / score heads): a GEMM with a 1-wide output
    /// wastes its micro-kernel and im2col costs more than the math. Each output channel is
    /// accumulated per input channel with the depthwise tap kernel, then summed over channels.
    fn narrow(
        &self,
        filters: &[TapTiles],
        input: &Array,
        wy: AxisWindow,
        wx: AxisWindow,
        out: &mut [f32],
    ) {
        let (_, h, w, c) = input.nhwc().expect("checked by run");
        let (oh, ow, oc) = (wy.out, wx.out, self.out_channels);
        let window = Window {
            h,
            w,
            kernel: (self.kernel_h, self.kernel_w),
            stride: self.stride,
            dilation: self.dilation,
            y: wy,
            x: wx,
        };
        let work = ow * oc * self.kernel_h * self.kernel_w * c;
        for_each_row(out, ow * oc, work, |row, dst| {
            let (b, oy) = (row / oh, row % oh);
            let image = &input.data[b * h * w * c..][..h * w * c];
            let mut partial = vec![0.0f32; ow * c];
            for (o, tiles) in filters.iter().enumerate() {
                partial.fill(0.0);
                accumulate_row(&mut partial, image, oy, &window, tiles);
                for (px, sums) in dst.chunks_exact_mut(oc).zip(partial.chunks_exact(c)) {
                    px[o] = self.bias[o] + sums.iter().sum::<f32>();
                }
            }
        });
    }

    pub fn run(&self, input: &Array) -> Result<Array, String> {
        let (batch, h, w, c) = input
            .nhwc()
            .ok_or_else(|| format!("input must be NHWC, got shape {:?}", input.shape))?;
        if c != self.in_channels {
            return Err(format!(
                "input has {c} channels, the filter expects {}",
                self.in_channels
            ));
        }
        let (wy, wx) = spatial_windows(
            self.padding,
            self.explicit_padding,
            (h, w),
            (self.kernel_h, self.kernel_w),
            self.stride,
            self.dilation,
        )?;
        let (oh, ow) = (wy.out, wx.out);
        let m = batch * oh * ow;
        // SAFETY: every path below writes each output element (GEMM tiles store whole rows;
        // the narrow kernel sets each channel of each pixel).
        let mut out = unsafe { uninit_f32(m * self.out_channels) };
        let pointwise = self.kernel_h == 1 && self.kernel_w == 1 && self.stride == (1, 1);
        match &self.prepared {
            Prepared::Narrow(filters) => {
                self.narrow(filters, input, wy, wx, &mut out);
                self.activation.apply(&mut out);
            }
            Prepared::Packed(weights) if pointwise => {
                matmul_packed(&input.data, weights, self.activation, &mut out)
            }
            Prepared::Packed(weights) => matmul_packed(
                &self.im2col(input, wy, wx),
                weights,
                self.activation,
                &mut out,
            ),
        }
        Ok(Array::new(vec![batch, oh, ow, self.out_channels], out))
    }
}

/// Direct (slow, obvious) convolution used to check the fast path in tests.
#[cfg(test)]
pub fn conv2d_naive(conv: &Conv2d, input: &Array) -> Array {
    let (batch, h, w, c) = input.nhwc().unwrap();
    let (wy, wx) = spatial_windows(
        conv.padding,
        conv.explicit_padding,
        (h, w),
        (conv.kernel_h, conv.kernel_w),
        conv.stride,
        conv.dilation,
    )
    .unwrap();
    let mut out = Array::zeros(vec![batch, wy.out, wx.out, conv.out_channels]);
    for b in 0..batch {
        for oy in 0..wy.out {
            for ox in 0..wx.out {
                for o in 0..conv.out_channels {
                    let mut acc = conv.bias[o];
                    for ky in 0..conv.kernel_h {
                        for kx in 0..conv.kernel_w {
                            let iy = (oy * conv.stride.0 + ky * conv.dilation.0) as isize
                                - wy.pad_before as isize;
                            let ix = (ox * conv.stride.1 + kx * conv.dilation.1) as isize
                                - wx.pad_before as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            for i in 0..c {
                                let x =
                                    input.data[((b * h + iy as usize) * w + ix as usize) * c + i];
                                acc += x * conv.weights
                                    [((o * conv.kernel_h + ky) * conv.kernel_w + kx) * c + i];
                            }
                        }
                    }
                    out.data[((b * wy.out + oy) * wx.out + ox) * conv.out_channels + o] =
                        conv.activation.apply_scalar(acc);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(n: usize, f: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32) * f).sin()).collect()
    }

    #[test]
    fn matches_naive_for_strides_paddings_dilations() {
        for &(kh, kw, stride, dilation, padding) in &[
            (1, 1, (1, 1), (1, 1), Padding::Same),
            (1, 1, (2, 2), (1, 1), Padding::Valid),
            (3, 3, (2, 2), (1, 1), Padding::Same),
            (3, 3, (3, 3), (1, 1), Padding::Valid),
            (5, 5, (2, 2), (1, 1), Padding::Same),
            (2, 2, (1, 1), (1, 1), Padding::Valid),
            (3, 2, (1, 2), (2, 1), Padding::Same),
        ] {
            // 1 output channel takes the direct kernel, 4 the GEMM one.
            for o in [1, 4] {
                let c = 3;
                let conv = Conv2d::new(
                    wave(o * kh * kw * c, 0.7),
                    wave(o, 1.3),
                    (o, kh, kw, c),
                    stride,
                    dilation,
                    padding,
                    Activation::Relu6,
                );
                let input = Array::new(vec![2, 9, 8, c], wave(2 * 9 * 8 * c, 0.3));
                let fast = conv.run(&input).unwrap();
                let slow = conv2d_naive(&conv, &input);
                assert_eq!(fast.shape, slow.shape);
                for (a, b) in fast.data.iter().zip(&slow.data) {
                    assert!(
                        (a - b).abs() < 1e-5,
                        "{kh}x{kw} {stride:?} {padding:?}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn explicit_padding_equals_valid_conv_on_zero_padded_input() {
        for (o, k, stride) in [(1, 3, (1, 1)), (8, 3, (2, 2)), (8, 5, (2, 1))] {
            let c = 3;
            let mut conv = Conv2d::new(
                wave(o * k * k * c, 0.7),
                wave(o, 1.3),
                (o, k, k, c),
                stride,
                (1, 1),
                Padding::Valid,
                Activation::None,
            );
            let input = Array::new(vec![1, 9, 8, c], wave(9 * 8 * c, 0.3));
            let pads = [(1, 2), (2, 1)];
            let padded =
                crate::tflite::kernels::shape::pad(&input, &[(0, 0), pads[0], pads[1], (0, 0)])
                    .unwrap();
            let want = conv.run(&padded).unwrap();
            conv.explicit_padding = Some(pads);
            let got = conv.run(&input).unwrap();
            assert_eq!(got.shape, want.shape);
            for (a, b) in got.data.iter().zip(&want.data) {
                assert!((a - b).abs() < 1e-5, "{o}x{k} {stride:?}: {a} vs {b}");
            }
        }
    }
}
