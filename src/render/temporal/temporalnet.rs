//! The control image of a TemporalNet ControlNet (`CiaraRowles/TemporalNet`): the previous
//! output frame, which the net was trained to keep the current frame consistent with.
//! Warping it to the current frame first (by the input's flow) lines its content up with
//! what the current frame shows.

use image::RgbImage;

use super::input_flow::InputFlow;

/// TemporalNet's control image for the current frame.
///
/// * with a previous output: that output, warped onto the current frame when `warp` is on
///   and the flow is known (pixels whose source falls outside take the nearest edge);
/// * without one (the clip's first frame): the current source frame, so that the first frame
///   is conditioned on what it shows rather than on a blank image.
pub fn control_image(
    previous_output: Option<&RgbImage>,
    flow: Option<&InputFlow>,
    warp: bool,
    current_source: &RgbImage,
) -> RgbImage {
    match (previous_output, flow) {
        (Some(previous), Some(flow)) if warp => flow.warp_to_current(previous).0,
        (Some(previous), _) => previous.clone(),
        (None, _) => current_source.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowField;

    #[test]
    fn picks_warped_previous_plain_previous_or_source() {
        let source = RgbImage::from_pixel(3, 1, image::Rgb([9, 9, 9]));
        let previous = RgbImage::from_fn(3, 1, |x, _| image::Rgb([x as u8 * 100, 0, 0]));
        let mut flow = InputFlow {
            to_previous: FlowField::zeros(3, 1),
            from_previous: None,
        };
        // The current frame shows at x what the previous frame had at x + 1.
        flow.to_previous.u.data.iter_mut().for_each(|u| *u = 1.0);

        let warped = control_image(Some(&previous), Some(&flow), true, &source);
        let reds: Vec<u8> = warped.pixels().map(|p| p[0]).collect();
        assert_eq!(reds, vec![100, 200, 200]);

        assert_eq!(
            control_image(Some(&previous), Some(&flow), false, &source),
            previous
        );
        assert_eq!(
            control_image(Some(&previous), None, true, &source),
            previous
        );
        assert_eq!(control_image(None, Some(&flow), true, &source), source);
    }
}
