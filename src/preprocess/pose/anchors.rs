//! SSD anchor generation, as MediaPipe's `SsdAnchorsCalculator` does it
//! (`mediapipe/calculators/tflite/ssd_anchors_calculator.cc`, non-multiscale path), with each
//! detector's options from its graph.

/// An anchor box in normalised [0, 1] input coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    pub x_center: f32,
    pub y_center: f32,
    pub w: f32,
    pub h: f32,
}

/// `SsdAnchorsCalculatorOptions` (the fields the MediaPipe detectors use).
#[derive(Debug, Clone, PartialEq)]
pub struct SsdAnchorOptions {
    pub input_size_width: u32,
    pub input_size_height: u32,
    pub min_scale: f32,
    pub max_scale: f32,
    pub anchor_offset_x: f32,
    pub anchor_offset_y: f32,
    pub strides: Vec<u32>,
    pub aspect_ratios: Vec<f32>,
    pub reduce_boxes_in_lowest_layer: bool,
    /// Proto default 1.0: one extra anchor per cell at the geometric mean scale.
    pub interpolated_scale_aspect_ratio: f32,
    pub fixed_anchor_size: bool,
}

impl SsdAnchorOptions {
    /// `mediapipe/modules/pose_detection/pose_detection_cpu.pbtxt`: 2254 anchors.
    pub fn pose_detection() -> Self {
        SsdAnchorOptions {
            input_size_width: 224,
            input_size_height: 224,
            min_scale: 0.1484375,
            max_scale: 0.75,
            anchor_offset_x: 0.5,
            anchor_offset_y: 0.5,
            strides: vec![8, 16, 32, 32, 32],
            aspect_ratios: vec![1.0],
            reduce_boxes_in_lowest_layer: false,
            interpolated_scale_aspect_ratio: 1.0,
            fixed_anchor_size: true,
        }
    }

    /// `mediapipe/modules/palm_detection/palm_detection_cpu.pbtxt` (full model): 2016 anchors.
    pub fn palm_detection() -> Self {
        SsdAnchorOptions {
            input_size_width: 192,
            input_size_height: 192,
            strides: vec![8, 16, 16, 16],
            ..Self::pose_detection()
        }
    }

    /// `mediapipe/modules/face_detection/face_detection_short_range.pbtxt` (options applied
    /// to `face_detection.pbtxt`'s SsdAnchorsCalculator): 896 anchors.
    pub fn face_detection_short_range() -> Self {
        SsdAnchorOptions {
            input_size_width: 128,
            input_size_height: 128,
            strides: vec![8, 16, 16, 16],
            ..Self::pose_detection()
        }
    }
}

/// `CalculateScale`: scales spread linearly between min and max over the layers.
fn calculate_scale(min_scale: f32, max_scale: f32, stride_index: usize, num_strides: usize) -> f32 {
    if num_strides == 1 {
        (min_scale + max_scale) * 0.5
    } else {
        (min_scale as f64
            + (max_scale - min_scale) as f64 * stride_index as f64 / (num_strides as f64 - 1.0))
            as f32
    }
}

/// Generates the anchors in the order the model's outputs are laid out: layer by layer
/// (consecutive layers with the same stride merged), row-major over the feature map, then
/// anchor by anchor within a cell.
pub fn generate_anchors(options: &SsdAnchorOptions) -> Vec<Anchor> {
    let strides = &options.strides;
    let num_layers = strides.len();
    let mut anchors = Vec::new();
    let mut layer_id = 0;
    while layer_id < num_layers {
        let mut aspect_ratios = Vec::new();
        let mut scales = Vec::new();
        let mut last_same_stride_layer = layer_id;
        while last_same_stride_layer < num_layers
            && strides[last_same_stride_layer] == strides[layer_id]
        {
            let scale = calculate_scale(
                options.min_scale,
                options.max_scale,
                last_same_stride_layer,
                num_layers,
            );
            if last_same_stride_layer == 0 && options.reduce_boxes_in_lowest_layer {
                aspect_ratios.extend([1.0, 2.0, 0.5]);
                scales.extend([0.1, scale, scale]);
            } else {
                for &ratio in &options.aspect_ratios {
                    aspect_ratios.push(ratio);
                    scales.push(scale);
                }
                if options.interpolated_scale_aspect_ratio > 0.0 {
                    let scale_next = if last_same_stride_layer == num_layers - 1 {
                        1.0
                    } else {
                        calculate_scale(
                            options.min_scale,
                            options.max_scale,
                            last_same_stride_layer + 1,
                            num_layers,
                        )
                    };
                    scales.push((scale * scale_next).sqrt());
                    aspect_ratios.push(options.interpolated_scale_aspect_ratio);
                }
            }
            last_same_stride_layer += 1;
        }
        let sizes: Vec<(f32, f32)> = aspect_ratios
            .iter()
            .zip(&scales)
            .map(|(&ratio, &scale)| {
                let r = ratio.sqrt();
                (scale * r, scale / r) // (width, height)
            })
            .collect();

        let stride = strides[layer_id] as f32;
        let fm_h = (options.input_size_height as f32 / stride).ceil() as usize;
        let fm_w = (options.input_size_width as f32 / stride).ceil() as usize;
        for y in 0..fm_h {
            for x in 0..fm_w {
                for &(w, h) in &sizes {
                    let (w, h) = if options.fixed_anchor_size {
                        (1.0, 1.0)
                    } else {
                        (w, h)
                    };
                    anchors.push(Anchor {
                        x_center: (x as f32 + options.anchor_offset_x) / fm_w as f32,
                        y_center: (y as f32 + options.anchor_offset_y) / fm_h as f32,
                        w,
                        h,
                    });
                }
            }
        }
        layer_id = last_same_stride_layer;
    }
    anchors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_counts_match_the_graphs_num_boxes() {
        assert_eq!(
            generate_anchors(&SsdAnchorOptions::pose_detection()).len(),
            2254
        );
        assert_eq!(
            generate_anchors(&SsdAnchorOptions::palm_detection()).len(),
            2016
        );
        assert_eq!(
            generate_anchors(&SsdAnchorOptions::face_detection_short_range()).len(),
            896
        );
    }

    #[test]
    fn face_anchors_layout() {
        let a = generate_anchors(&SsdAnchorOptions::face_detection_short_range());
        // Stride 8 on 128: 16 × 16 cells, 2 anchors each (aspect 1 + interpolated).
        assert_eq!(a[0].x_center, 0.5 / 16.0);
        assert_eq!(a[0], a[1]);
        assert_eq!(a[2].x_center, 1.5 / 16.0);
        assert_eq!(a[511].x_center, 15.5 / 16.0);
        assert_eq!(a[511].y_center, 15.5 / 16.0);
        // Three stride-16 layers merged: 8 × 8 cells with 6 anchors each.
        assert_eq!(a[512].x_center, 0.5 / 8.0);
        assert_eq!(a[517], a[512]);
        assert_eq!(a[518].x_center, 1.5 / 8.0);
        assert!(a.iter().all(|x| x.w == 1.0 && x.h == 1.0));
    }

    #[test]
    fn pose_anchors_last_layer() {
        let a = generate_anchors(&SsdAnchorOptions::pose_detection());
        // 28² · 2 + 14² · 2 = 1960 anchors before the merged stride-32 layers (7² · 6).
        assert_eq!(a[1960].x_center, 0.5 / 7.0);
        assert_eq!(a[2253].y_center, 6.5 / 7.0);
    }

    #[test]
    fn non_fixed_sizes_follow_scales() {
        let mut o = SsdAnchorOptions::face_detection_short_range();
        o.fixed_anchor_size = false;
        let a = generate_anchors(&o);
        // Layer 0 of 4: scale = min_scale; interpolated sqrt(min · scale(1)).
        let s0 = 0.1484375f32;
        let s1 = 0.1484375 + (0.75 - 0.1484375) / 3.0;
        assert!((a[0].w - s0).abs() < 1e-7);
        assert!((a[1].w - (s0 * s1).sqrt()).abs() < 1e-6);
    }
}
