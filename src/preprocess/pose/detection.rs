//! Detector output decoding, as MediaPipe's `TensorsToDetectionsCalculator`
//! (`mediapipe/calculators/tensor/tensors_to_detections_calculator.cc`, `DecodeBoxes` and
//! `ConvertToDetections`), weighted non-maximum suppression as its
//! `NonMaxSuppressionCalculator` with `algorithm: WEIGHTED`
//! (`mediapipe/calculators/util/non_max_suppression_calculator.cc`), and the letterbox
//! removal / projection that map detections back to the image
//! (`detection_letterbox_removal_calculator.cc`, `detection_projection_calculator.cc`).

use super::anchors::Anchor;

/// A detection in normalised coordinates of the image it was decoded for.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub score: f32,
    pub xmin: f32,
    pub ymin: f32,
    pub width: f32,
    pub height: f32,
    /// Model keypoints `(x, y)`, normalised.
    pub keypoints: Vec<(f32, f32)>,
}

/// `TensorsToDetectionsCalculatorOptions` for single-class SSD heads.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    pub num_boxes: usize,
    pub num_coords: usize,
    pub box_coord_offset: usize,
    pub keypoint_coord_offset: usize,
    pub num_keypoints: usize,
    /// `reverse_output_order: true` → boxes are (x, y, w, h) and keypoints (x, y).
    pub reverse_output_order: bool,
    pub x_scale: f32,
    pub y_scale: f32,
    pub w_scale: f32,
    pub h_scale: f32,
    pub sigmoid_score: bool,
    pub score_clipping_thresh: Option<f32>,
    pub min_score_thresh: f32,
}

impl DecodeOptions {
    /// `pose_detection_cpu.pbtxt`: 4 keypoints (hip centre, full-body circle point, shoulder
    /// centre, upper-body circle point).
    pub fn pose_detection() -> Self {
        DecodeOptions {
            num_boxes: 2254,
            num_coords: 12,
            box_coord_offset: 0,
            keypoint_coord_offset: 4,
            num_keypoints: 4,
            reverse_output_order: true,
            x_scale: 224.0,
            y_scale: 224.0,
            w_scale: 224.0,
            h_scale: 224.0,
            sigmoid_score: true,
            score_clipping_thresh: Some(100.0),
            min_score_thresh: 0.5,
        }
    }

    /// `palm_detection_cpu.pbtxt`: 7 keypoints (wrist centre, index/middle/ring/pinky MCP,
    /// thumb CMC and MCP).
    pub fn palm_detection() -> Self {
        DecodeOptions {
            num_boxes: 2016,
            num_coords: 18,
            num_keypoints: 7,
            x_scale: 192.0,
            y_scale: 192.0,
            w_scale: 192.0,
            h_scale: 192.0,
            ..Self::pose_detection()
        }
    }

    /// `face_detection_short_range.pbtxt` + `face_detection.pbtxt`: 6 keypoints (right eye,
    /// left eye, nose tip, mouth, right ear tragion, left ear tragion).
    pub fn face_detection_short_range() -> Self {
        DecodeOptions {
            num_boxes: 896,
            num_coords: 16,
            num_keypoints: 6,
            x_scale: 128.0,
            y_scale: 128.0,
            w_scale: 128.0,
            h_scale: 128.0,
            ..Self::pose_detection()
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Decodes raw box regressions (`[num_boxes × num_coords]`) and class logits
/// (`[num_boxes]`) against the anchors, keeping boxes whose score reaches the threshold.
pub fn decode_detections(
    raw_boxes: &[f32],
    raw_scores: &[f32],
    anchors: &[Anchor],
    o: &DecodeOptions,
) -> Vec<Detection> {
    let n = o.num_boxes.min(anchors.len()).min(raw_scores.len());
    let mut out = Vec::new();
    for (i, anchor) in anchors.iter().enumerate().take(n) {
        let mut score = raw_scores[i];
        if o.sigmoid_score {
            if let Some(clip) = o.score_clipping_thresh {
                score = score.clamp(-clip, clip);
            }
            score = sigmoid(score);
        }
        if score < o.min_score_thresh {
            continue;
        }
        let b = &raw_boxes[i * o.num_coords..(i + 1) * o.num_coords];
        let off = o.box_coord_offset;
        let (mut x_center, mut y_center, mut w, mut h) = if o.reverse_output_order {
            (b[off], b[off + 1], b[off + 2], b[off + 3])
        } else {
            (b[off + 1], b[off], b[off + 3], b[off + 2])
        };
        x_center = x_center / o.x_scale * anchor.w + anchor.x_center;
        y_center = y_center / o.y_scale * anchor.h + anchor.y_center;
        h = h / o.h_scale * anchor.h;
        w = w / o.w_scale * anchor.w;
        let (ymin, xmin) = (y_center - h / 2.0, x_center - w / 2.0);
        let (ymax, xmax) = (y_center + h / 2.0, x_center + w / 2.0);
        let (width, height) = (xmax - xmin, ymax - ymin);
        // Negative or NaN sizes come from bad regressions; MediaPipe drops them.
        if width < 0.0 || height < 0.0 || width.is_nan() || height.is_nan() {
            continue;
        }
        let keypoints = (0..o.num_keypoints)
            .map(|k| {
                let kp = &b[o.keypoint_coord_offset + 2 * k..];
                let (kx, ky) = if o.reverse_output_order {
                    (kp[0], kp[1])
                } else {
                    (kp[1], kp[0])
                };
                (
                    kx / o.x_scale * anchor.w + anchor.x_center,
                    ky / o.y_scale * anchor.h + anchor.y_center,
                )
            })
            .collect();
        out.push(Detection {
            score,
            xmin,
            ymin,
            width,
            height,
            keypoints,
        });
    }
    out
}

/// Intersection over union of two detection boxes (`INTERSECTION_OVER_UNION`).
fn iou(a: &Detection, b: &Detection) -> f32 {
    let ix0 = a.xmin.max(b.xmin);
    let iy0 = a.ymin.max(b.ymin);
    let ix1 = (a.xmin + a.width).min(b.xmin + b.width);
    let iy1 = (a.ymin + a.height).min(b.ymin + b.height);
    if ix1 < ix0 || iy1 < iy0 {
        return 0.0;
    }
    let inter = (ix1 - ix0) * (iy1 - iy0);
    let norm = a.width * a.height + b.width * b.height - inter;
    if norm > 0.0 {
        inter / norm
    } else {
        0.0
    }
}

/// Weighted NMS: repeatedly take the best remaining detection, gather every remaining one
/// overlapping it by more than `min_suppression_threshold` (itself included), and replace
/// its box and keypoints by their score-weighted average; the score stays the best one's.
pub fn weighted_nms(detections: Vec<Detection>, min_suppression_threshold: f32) -> Vec<Detection> {
    let mut remaining: Vec<usize> = (0..detections.len()).collect();
    // Stable sort by descending score (MediaPipe's std::sort order for ties is unspecified).
    remaining.sort_by(|&a, &b| detections[b].score.total_cmp(&detections[a].score));
    let mut out = Vec::new();
    while let Some(&best) = remaining.first() {
        let top = &detections[best];
        let (candidates, rest): (Vec<usize>, Vec<usize>) = remaining
            .iter()
            .partition(|&&i| iou(&detections[i], top) > min_suppression_threshold);
        let mut merged = top.clone();
        if !candidates.is_empty() {
            let mut total = 0.0f32;
            let (mut x0, mut y0, mut x1, mut y1) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
            let mut kps = vec![(0.0f32, 0.0f32); top.keypoints.len()];
            for &c in &candidates {
                let d = &detections[c];
                let s = d.score;
                total += s;
                x0 += d.xmin * s;
                y0 += d.ymin * s;
                x1 += (d.xmin + d.width) * s;
                y1 += (d.ymin + d.height) * s;
                for (acc, kp) in kps.iter_mut().zip(&d.keypoints) {
                    acc.0 += kp.0 * s;
                    acc.1 += kp.1 * s;
                }
            }
            merged.xmin = x0 / total;
            merged.ymin = y0 / total;
            merged.width = x1 / total - merged.xmin;
            merged.height = y1 / total - merged.ymin;
            merged.keypoints = kps.iter().map(|&(x, y)| (x / total, y / total)).collect();
        }
        out.push(merged);
        if rest.len() == remaining.len() {
            break;
        }
        remaining = rest;
    }
    out
}

/// Letterbox padding `[left, top, right, bottom]` as fractions of the padded input.
pub type Padding = [f32; 4];

/// `DetectionLetterboxRemovalCalculator`: maps from the padded square back to the image.
pub fn remove_letterbox(d: &mut Detection, padding: Padding) {
    let [left, top, right, bottom] = padding;
    let sx = 1.0 - left - right;
    let sy = 1.0 - top - bottom;
    d.xmin = (d.xmin - left) / sx;
    d.ymin = (d.ymin - top) / sy;
    d.width /= sx;
    d.height /= sy;
    for kp in &mut d.keypoints {
        kp.0 = (kp.0 - left) / sx;
        kp.1 = (kp.1 - top) / sy;
    }
}

/// `DetectionProjectionCalculator`: applies `project` to the keypoints and replaces the box
/// by the axis-aligned box around its projected corners.
pub fn project_detection(d: &mut Detection, project: impl Fn(f32, f32) -> (f32, f32)) {
    for kp in &mut d.keypoints {
        *kp = project(kp.0, kp.1);
    }
    let corners = [
        (d.xmin, d.ymin),
        (d.xmin + d.width, d.ymin),
        (d.xmin + d.width, d.ymin + d.height),
        (d.xmin, d.ymin + d.height),
    ]
    .map(|(x, y)| project(x, y));
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for (x, y) in corners {
        x0 = x0.min(x);
        y0 = y0.min(y);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    d.xmin = x0;
    d.ymin = y0;
    d.width = x1 - x0;
    d.height = y1 - y0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(score: f32, x: f32, y: f32, s: f32, kp: (f32, f32)) -> Detection {
        Detection {
            score,
            xmin: x,
            ymin: y,
            width: s,
            height: s,
            keypoints: vec![kp],
        }
    }

    #[test]
    fn decode_applies_anchor_and_scales() {
        let anchors = [Anchor {
            x_center: 0.5,
            y_center: 0.25,
            w: 1.0,
            h: 1.0,
        }];
        let o = DecodeOptions {
            num_boxes: 1,
            num_coords: 6,
            num_keypoints: 1,
            x_scale: 100.0,
            y_scale: 100.0,
            w_scale: 100.0,
            h_scale: 100.0,
            ..DecodeOptions::pose_detection()
        };
        // x, y, w, h, kx, ky (reverse_output_order).
        let raw = [10.0, -5.0, 20.0, 40.0, 1.0, 2.0];
        let d = decode_detections(&raw, &[2.0], &anchors, &o);
        assert_eq!(d.len(), 1);
        let d = &d[0];
        assert!((d.score - 1.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-7);
        assert!((d.xmin - (0.6 - 0.1)).abs() < 1e-6);
        assert!((d.ymin - (0.2 - 0.2)).abs() < 1e-6);
        assert!((d.width - 0.2).abs() < 1e-6 && (d.height - 0.4).abs() < 1e-6);
        assert!((d.keypoints[0].0 - 0.51).abs() < 1e-6);
        assert!((d.keypoints[0].1 - 0.27).abs() < 1e-6);
        // Below threshold and negative-size boxes are dropped.
        assert!(decode_detections(&raw, &[-2.0], &anchors, &o).is_empty());
        let neg = [0.0, 0.0, -1.0, 1.0, 0.0, 0.0];
        assert!(decode_detections(&neg, &[5.0], &anchors, &o).is_empty());
    }

    #[test]
    fn weighted_nms_averages_overlapping_boxes() {
        let dets = vec![
            det(0.6, 0.1, 0.1, 0.2, (0.3, 0.3)),
            det(0.9, 0.12, 0.1, 0.2, (0.1, 0.1)),
            det(0.8, 0.7, 0.7, 0.2, (0.8, 0.8)),
        ];
        let out = weighted_nms(dets, 0.3);
        assert_eq!(out.len(), 2);
        // Best first, keeps its score; box = (0.9·0.12 + 0.6·0.1) / 1.5 = 0.112.
        assert_eq!(out[0].score, 0.9);
        assert!((out[0].xmin - 0.112).abs() < 1e-6);
        assert!((out[0].width - 0.2).abs() < 1e-6);
        assert!((out[0].keypoints[0].0 - (0.9 * 0.1 + 0.6 * 0.3) / 1.5).abs() < 1e-6);
        assert_eq!(out[1].score, 0.8);
        assert!((out[1].xmin - 0.7).abs() < 1e-6);
    }

    #[test]
    fn letterbox_removal_inverts_padding() {
        let mut d = det(1.0, 0.25, 0.5, 0.5, (0.5, 0.5));
        remove_letterbox(&mut d, [0.25, 0.0, 0.25, 0.0]);
        assert_eq!(d.xmin, 0.0);
        assert_eq!(d.width, 1.0);
        assert_eq!(d.keypoints[0], (0.5, 0.5));
        assert_eq!(d.ymin, 0.5);
    }

    #[test]
    fn projection_takes_box_around_rotated_corners() {
        let mut d = det(1.0, 0.0, 0.0, 1.0, (1.0, 0.0));
        // 90° rotation about the origin: (x, y) → (−y, x).
        project_detection(&mut d, |x, y| (-y, x));
        assert_eq!(d.keypoints[0], (0.0, 1.0));
        assert_eq!((d.xmin, d.ymin, d.width, d.height), (-1.0, 0.0, 1.0, 1.0));
    }
}
