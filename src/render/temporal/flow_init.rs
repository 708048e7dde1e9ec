//! Flow-warped latent initialisation: frame t starts from the previous output moved onto
//! frame t by the input's optical flow, VAE-encoded and noised to the `flow_init.strength`
//! step (img2img), so the sampler only has to repair what moved instead of inventing the
//! frame anew. Where the flow cannot be trusted (disocclusions, pixels entering the frame,
//! forward–backward disagreement) the current source frame fills in, as there the previous
//! output has nothing to offer.

use image::RgbImage;

use super::input_flow::InputFlow;

/// The img2img start image of the current frame: the warped previous output where the flow
/// is trusted, the current source frame elsewhere. All images have the same size.
pub fn init_image(
    previous_output: &RgbImage,
    flow: &InputFlow,
    current_source: &RgbImage,
) -> RgbImage {
    let (mut warped, inside) = flow.warp_to_current(previous_output);
    let trusted = flow.trusted();
    let source = current_source.as_raw();
    for (i, px) in warped.as_mut().chunks_exact_mut(3).enumerate() {
        if !(trusted[i] && inside[i]) {
            px.copy_from_slice(&source[i * 3..i * 3 + 3]);
        }
    }
    warped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowField;

    #[test]
    fn untrusted_pixels_come_from_the_source() {
        let previous = RgbImage::from_fn(4, 1, |x, _| image::Rgb([x as u8 * 10, 1, 1]));
        let source = RgbImage::from_pixel(4, 1, image::Rgb([200, 200, 200]));
        let mut to_previous = FlowField::zeros(4, 1);
        to_previous.u.data.iter_mut().for_each(|u| *u = 1.0);
        let mut from_previous = FlowField::zeros(4, 1);
        from_previous.u.data.iter_mut().for_each(|u| *u = -1.0);
        let flow = InputFlow {
            to_previous,
            from_previous: Some(from_previous),
        };
        let init = init_image(&previous, &flow, &source);
        let reds: Vec<u8> = init.pixels().map(|p| p[0]).collect();
        // x = 3 would sample past the right edge: the source fills it.
        assert_eq!(reds, vec![10, 20, 30, 200]);
    }
}
