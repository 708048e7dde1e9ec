//! The unit that travels between pipeline stages: one upright RGB picture.

/// One output frame: tight RGB24 (`width * height * 3` bytes, rows top to bottom, no
/// padding), already rotated upright. `index` is the frame's position on the clip's
/// constant-rate grid (frame `index` starts at `index / fps` seconds), also when only a
/// range of frames is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub index: u64,
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl Frame {
    /// A frame from raw RGB24 bytes; `None` if the length does not match the size.
    pub fn new(index: u64, width: u32, height: u32, data: Vec<u8>) -> Option<Self> {
        (data.len() == rgb_len(width, height)).then_some(Self {
            index,
            width,
            height,
            data,
        })
    }

    /// Whether `data` holds exactly `width * height` RGB pixels.
    pub fn is_consistent(&self) -> bool {
        self.data.len() == rgb_len(self.width, self.height)
    }

    /// The RGB value at column `x`, row `y`.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// Moves the pixels into an [`image::RgbImage`] (no copy).
    pub fn into_rgb_image(self) -> Option<image::RgbImage> {
        image::RgbImage::from_raw(self.width, self.height, self.data)
    }

    /// Takes the pixels of an [`image::RgbImage`] (no copy).
    pub fn from_rgb_image(index: u64, image: image::RgbImage) -> Self {
        let (width, height) = image.dimensions();
        Self {
            index,
            width,
            height,
            data: image.into_raw(),
        }
    }
}

pub(crate) fn rgb_len(width: u32, height: u32) -> usize {
    width as usize * height as usize * 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_is_checked() {
        assert!(Frame::new(0, 2, 2, vec![0; 12]).is_some());
        assert!(Frame::new(0, 2, 2, vec![0; 11]).is_none());
    }

    #[test]
    fn image_round_trip_and_pixel_access() {
        let data: Vec<u8> = (0..18).collect();
        let frame = Frame::new(7, 3, 2, data).unwrap();
        assert_eq!(frame.pixel(2, 1), [15, 16, 17]);
        let image = frame.clone().into_rgb_image().unwrap();
        assert_eq!(image.get_pixel(1, 0).0, [3, 4, 5]);
        assert_eq!(Frame::from_rgb_image(7, image), frame);
    }
}
