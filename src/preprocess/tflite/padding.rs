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
    fn valid_padding_never_pads() {
        assert_eq!(axis_window(Padding::Valid, 226, 3, 2, 1), w(112, 0, 0));
        assert_eq!(axis_window(Padding::Valid, 192, 3, 3, 1), w(64, 0, 0));
        assert_eq!(axis_window(Padding::Valid, 7, 2, 2, 1), w(3, 0, 0));
        assert_eq!(axis_window(Padding::Valid, 2, 3, 1, 1), None);
        assert_eq!(axis_window(Padding::Valid, 10, 3, 1, 2), w(6, 0, 0));
    }
}
