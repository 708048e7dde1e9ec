//! Feathered paste (pure): `out = m · detail + (1 − m) · frame` inside a crop rectangle.
//! Pixels whose weight is 0 are not touched, so they stay bit for bit what they were;
//! weight 1 copies the detail pixel exactly.

use image::RgbImage;

use super::error::DetailError;
use super::mask::Mask;
use super::regions::PixelRect;

/// Blends `detail` (the crop's size) into `frame` at `rect` with the per-pixel weights of
/// `mask` (also the crop's size).
pub fn feathered_paste(
    frame: &mut RgbImage,
    detail: &RgbImage,
    rect: PixelRect,
    mask: &Mask,
) -> Result<(), DetailError> {
    let (fw, fh) = frame.dimensions();
    if detail.dimensions() != (rect.width, rect.height)
        || (mask.width, mask.height) != (rect.width, rect.height)
        || rect.right() > fw
        || rect.bottom() > fh
    {
        return Err(DetailError::SizeMismatch(format!(
            "paste of a {}x{} crop with a {}x{} mask at {rect:?} into a {fw}x{fh} frame",
            detail.width(),
            detail.height(),
            mask.width,
            mask.height
        )));
    }
    for y in 0..rect.height {
        for x in 0..rect.width {
            let m = mask.get(x, y);
            if m <= 0.0 {
                continue;
            }
            let src = detail.get_pixel(x, y);
            let dst = frame.get_pixel_mut(rect.x + x, rect.y + y);
            if m >= 1.0 {
                *dst = *src;
                continue;
            }
            for c in 0..3 {
                let v = m * src[c] as f32 + (1.0 - m) * dst[c] as f32;
                dst[c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame whose every byte differs from its neighbours, so any stray write shows.
    fn patterned(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 7 + y * 13) as u8,
                (x * 31 + y * 3 + 1) as u8,
                (x ^ y) as u8,
            ])
        })
    }

    #[test]
    fn pixels_outside_the_mask_are_unchanged_bit_for_bit() {
        let original = patterned(40, 30);
        let mut frame = original.clone();
        let rect = PixelRect {
            x: 5,
            y: 7,
            width: 12,
            height: 10,
        };
        let detail = RgbImage::from_pixel(12, 10, image::Rgb([255, 0, 128]));
        // Weights: 0 on the crop's outer ring, a ramp inside, 1 at the centre.
        let values = (0..120)
            .map(|i| {
                let (x, y) = ((i % 12) as f32, (i / 12) as f32);
                let ring = x.min(y).min(11.0 - x).min(9.0 - y);
                (ring / 3.0).min(1.0)
            })
            .collect();
        let mask = Mask {
            width: 12,
            height: 10,
            values,
        };
        feathered_paste(&mut frame, &detail, rect, &mask).unwrap();
        for (x, y, px) in frame.enumerate_pixels() {
            let inside = x >= rect.x && x < rect.right() && y >= rect.y && y < rect.bottom();
            let weight = if inside {
                mask.get(x - rect.x, y - rect.y)
            } else {
                0.0
            };
            let before = original.get_pixel(x, y);
            if weight == 0.0 {
                assert_eq!(px, before, "({x}, {y}) changed");
            } else if weight == 1.0 {
                assert_eq!(px, &image::Rgb([255, 0, 128]), "({x}, {y})");
            } else {
                for c in 0..3 {
                    let expected = weight * detail.get_pixel(0, 0)[c] as f32
                        + (1.0 - weight) * before[c] as f32;
                    assert!(
                        (px[c] as f32 - expected).abs() <= 0.5,
                        "({x}, {y}) channel {c}"
                    );
                }
            }
        }
        // Something was pasted.
        assert_ne!(frame, original);
    }

    #[test]
    fn size_mismatches_are_errors_not_panics() {
        let mut frame = patterned(10, 10);
        let rect = PixelRect {
            x: 5,
            y: 5,
            width: 6,
            height: 4,
        };
        let mask = Mask {
            width: 6,
            height: 4,
            values: vec![1.0; 24],
        };
        let detail = RgbImage::new(6, 4);
        assert!(feathered_paste(&mut frame, &detail, rect, &mask).is_err());
        let rect = PixelRect { x: 4, ..rect };
        assert!(feathered_paste(&mut frame, &RgbImage::new(5, 4), rect, &mask).is_err());
        assert!(feathered_paste(&mut frame, &detail, rect, &mask).is_ok());
    }
}
