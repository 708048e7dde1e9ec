//! Output size and implicit padding of windowed ops (conv, depthwise conv, pooling), exactly
//! as TFLite computes them (`ComputeOutSize` / `ComputePaddingWithOffset` in
//! `tensorflow/lite/kernels/padding.h`): for SAME the odd pixel of padding goes after.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    Same,
    Valid,
}

/// One spatial axis of a windowed op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisWindow {
    pub out: usize,
    /// Implicit zero (or, for pooling, ignored) cells before the first input cell.
    pub pad_before: usize,
    pub pad_after: usize,
}

/// Output length and padding along one axis. `None` when the window does not fit (VALID
/// with a filter larger than the input) or a parameter is zero.
pub fn axis_window(
    padding: Padding,
    input: usize,
    filter: usize,
    stride: usize,
    dilation: usize,
) -> Option<AxisWindow> {
    if filter == 0 || stride == 0 || dilation == 0 {
        return None;
    }
    let effective = (filter - 1) * dilation + 1;
    let out = match padding {
        Padding::Same => input.div_ceil(stride),
        Padding::Valid => {
            if input < effective {
                return None;
            }
            (input - effective) / stride + 1
        }
    };
    if out == 0 {
        return None;
    }
    let needed = (out - 1) * stride + effective;
    let total = needed.saturating_sub(input);
    Some(AxisWindow {
        out,
        pad_before: total / 2,
        pad_after: total - total / 2,
    })
}

/// One spatial axis of a windowed op whose input had an explicit zero PAD folded into it:
/// VALID over the padded extent, reading zeros for the `before` / `after` cells.
pub fn explicit_axis_window(
    input: usize,
    before: usize,
    after: usize,
    filter: usize,
    stride: usize,
    dilation: usize,
) -> Option<AxisWindow> {
    let padded = axis_window(
        Padding::Valid,
        input + before + after,
        filter,
        stride,
        dilation,
    )?;
    Some(AxisWindow {
        out: padded.out,
        pad_before: before,
        pad_after: after,
    })
}

/// The two spatial windows of a layer, from its padding mode or from explicit padding
/// `[(top, bottom), (left, right)]` when a PAD was folded into it.
#[allow(clippy::too_many_arguments)]
pub fn spatial_windows(
    padding: Padding,
    explicit: Option<[(usize, usize); 2]>,
    (h, w): (usize, usize),
    (kh, kw): (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
) -> Result<(AxisWindow, AxisWindow), String> {
    let windows = match explicit {
        Some([(top, bottom), (left, right)]) => (
            explicit_axis_window(h, top, bottom, kh, stride.0, dilation.0),
            explicit_axis_window(w, left, right, kw, stride.1, dilation.1),
        ),
        None => (
            axis_window(padding, h, kh, stride.0, dilation.0),
            axis_window(padding, w, kw, stride.1, dilation.1),
        ),
    };
    match windows {
        (Some(y), Some(x)) => Ok((y, x)),
        _ => Err(format!("filter {kh}x{kw} does not fit input {h}x{w}")),
    }
}

/// Input index read by output index `out` at filter tap `tap`, or `None` in the padding.
#[inline]
pub fn source_index(
    out: usize,
    tap: usize,
    stride: usize,
    dilation: usize,
    pad_before: usize,
    input: usize,
) -> Option<usize> {
    (out * stride + tap * dilation)
        .checked_sub(pad_before)
        .filter(|&i| i < input)
}

/// The output indices `lo..hi` whose input index for filter tap `tap` lies inside the input.
pub fn valid_outputs(
    tap: usize,
    stride: usize,
    dilation: usize,
    pad_before: usize,
    input: usize,
    output: usize,
) -> (usize, usize) {
    // out * stride + tap * dilation - pad_before in [0, input)
    let offset = tap * dilation;
    let lo = pad_before.saturating_sub(offset).div_ceil(stride);
    let hi = if input + pad_before > offset {
        (input + pad_before - offset).div_ceil(stride)
    } else {
        0
    };
    (lo.min(output), hi.min(output).max(lo.min(output)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(out: usize, before: usize, after: usize) -> Option<AxisWindow> {
        Some(AxisWindow {
            out,
            pad_before: before,
            pad_after: after,
        })
    }

    #[test]
    fn same_padding_puts_odd_pixel_after() {
        // 224, k3, s2 -> out 112, needs 225 -> 1 pixel of padding, after.
        assert_eq!(axis_window(Padding::Same, 224, 3, 2, 1), w(112, 0, 1));
        // 5x5 stride 2 on 64 -> out 32, needs 67 -> 3: 1 before, 2 after.
        assert_eq!(axis_window(Padding::Same, 64, 5, 2, 1), w(32, 1, 2));
        // stride 1, k3 -> symmetric 1/1.
        assert_eq!(axis_window(Padding::Same, 7, 3, 1, 1), w(7, 1, 1));
        // odd input, stride 2, k2 -> out 4, needs 8 -> 1 after.
        assert_eq!(axis_window(Padding::Same, 7, 2, 2, 1), w(4, 0, 1));
        // dilation 2 makes a 3-tap filter span 5.
        assert_eq!(axis_window(Padding::Same, 10, 3, 1, 2), w(10, 2, 2));
        // window smaller than stride: no padding needed.
        assert_eq!(axis_window(Padding::Same, 8, 1, 2, 1), w(4, 0, 0));
    }

    #[test]
    fn valid_output_ranges_match_source_index() {
        for (input, stride, dilation, pad_before, output) in [
            (8, 1, 1, 1, 8),
            (9, 2, 1, 2, 5),
            (7, 3, 2, 0, 3),
            (5, 2, 1, 3, 5),
        ] {
            for tap in 0..4 {
                let (lo, hi) = valid_outputs(tap, stride, dilation, pad_before, input, output);
                for out in 0..output {
                    let inside =
                        source_index(out, tap, stride, dilation, pad_before, input).is_some();
                    assert_eq!(
                        inside,
                        (lo..hi).contains(&out),
                        "tap {tap} out {out} in {input} s{stride} d{dilation} p{pad_before}"
                    );
                }
            }
        }
    }

    #[test]
    fn explicit_padding_is_valid_over_the_padded_input() {
        // PAD 1 before / 2 after a 7-wide input, then a VALID 3-tap stride-2 window.
        let w = explicit_axis_window(7, 1, 2, 3, 2, 1).unwrap();
        assert_eq!(
            w,
            AxisWindow {
                out: 4,
                pad_before: 1,
                pad_after: 2
            }
        );
        let (y, x) = spatial_windows(
            Padding::Valid,
            Some([(0, 0), (1, 2)]),
            (5, 7),
            (3, 3),
            (1, 2),
            (1, 1),
        )
        .unwrap();
        assert_eq!((y.out, x.out), (3, 4));
        assert!(spatial_windows(Padding::Valid, None, (2, 2), (3, 3), (1, 1), (1, 1)).is_err());
    }

    #[test]
    fn valid_padding_never_pads() {
        assert_eq!(axis_window(Padding::Valid, 226, 3, 2, 1), w(112, 0, 0));
        assert_eq!(axis_window(Padding::Valid, 192, 3, 3, 1), w(64, 0, 0));
        assert_eq!(axis_window(Padding::Valid, 7, 2, 2, 1), w(3, 0, 0));
        assert_eq!(axis_window(Padding::Valid, 2, 3, 1, 1), None);
        assert_eq!(axis_window(Padding::Valid, 10, 3, 1, 2), w(6, 0, 0));
    }
}
