//! Pixel format conversion with libswscale, with explicit YUV matrices and ranges.
//!
//! ffmpeg-next's scaler is not `Send`; the reader and writer run on pipeline threads, so
//! this owns the `SwsContext` itself. A context is only ever used by its owner, one call
//! at a time, which is all libswscale requires.

use std::ptr;

use ffmpeg_next::ffi;
use ffmpeg_next::format::Pixel;
use ffmpeg_next::frame;
use ffmpeg_next::util::color;

/// Which YUV↔RGB matrix and range a conversion uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct YuvMatrix {
    /// An `AVColorSpace` value (`sws_getCoefficients` is indexed by it).
    pub colorspace: i32,
    /// Full range (0–255) rather than limited (16–235).
    pub full_range: bool,
}

impl YuvMatrix {
    /// What a decoded frame says, or the usual guess when it says nothing: BT.709 for HD
    /// and up, BT.601 below (what players assume).
    pub fn of_decoded(space: color::Space, range: color::Range, height: u32) -> Self {
        let tagged = ffi::AVColorSpace::from(space) as i32;
        let unspecified = matches!(
            space,
            color::Space::Unspecified | color::Space::Reserved | color::Space::RGB
        );
        let colorspace = if unspecified {
            if height >= 720 {
                ffi::AVColorSpace::AVCOL_SPC_BT709 as i32
            } else {
                ffi::AVColorSpace::AVCOL_SPC_SMPTE170M as i32
            }
        } else {
            tagged
        };
        Self {
            colorspace,
            full_range: range == color::Range::JPEG,
        }
    }

    /// What our encoder writes (and tags): BT.709, limited range.
    pub const BT709_LIMITED: YuvMatrix = YuvMatrix {
        colorspace: ffi::AVColorSpace::AVCOL_SPC_BT709 as i32,
        full_range: false,
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    src: (Pixel, u32, u32),
    dst: (Pixel, u32, u32),
    matrix: YuvMatrix,
}

pub(crate) struct Scaler {
    ctx: *mut ffi::SwsContext,
    key: Option<Key>,
}

// SAFETY: the context is owned exclusively by this value and used through `&mut self`.
unsafe impl Send for Scaler {}

impl Scaler {
    pub fn new() -> Self {
        Self {
            ctx: ptr::null_mut(),
            key: None,
        }
    }

    /// Converts `src` into `dst` (allocated here at the destination size and format).
    /// The context is rebuilt only when the formats, sizes or matrix change.
    pub fn convert(
        &mut self,
        src: &frame::Video,
        dst: &mut frame::Video,
        dst_format: Pixel,
        dst_width: u32,
        dst_height: u32,
        matrix: YuvMatrix,
    ) -> Result<(), ffmpeg_next::Error> {
        let key = Key {
            src: (src.format(), src.width(), src.height()),
            dst: (dst_format, dst_width, dst_height),
            matrix,
        };
        if self.key != Some(key) {
            self.rebuild(key)?;
        }
        if dst.format() != dst_format || dst.width() != dst_width || dst.height() != dst_height {
            *dst = frame::Video::new(dst_format, dst_width, dst_height);
        }
        // SAFETY: both frames are allocated for the sizes and formats the context was
        // built for (checked through `key` above).
        let ret = unsafe {
            let s = src.as_ptr();
            let d = dst.as_mut_ptr();
            ffi::sws_scale(
                self.ctx,
                (*s).data.as_ptr() as *const *const u8,
                (*s).linesize.as_ptr(),
                0,
                src.height() as i32,
                (*d).data.as_ptr(),
                (*d).linesize.as_ptr(),
            )
        };
        if ret < 0 {
            return Err(ffmpeg_next::Error::from(ret));
        }
        Ok(())
    }

    fn rebuild(&mut self, key: Key) -> Result<(), ffmpeg_next::Error> {
        self.free();
        let flags = ffi::SWS_BICUBIC
            | ffi::SWS_ACCURATE_RND
            | ffi::SWS_FULL_CHR_H_INT
            | ffi::SWS_FULL_CHR_H_INP;
        // SAFETY: plain constructor calls; a null result is handled.
        unsafe {
            self.ctx = ffi::sws_getContext(
                key.src.1 as i32,
                key.src.2 as i32,
                key.src.0.into(),
                key.dst.1 as i32,
                key.dst.2 as i32,
                key.dst.0.into(),
                flags,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null(),
            );
            if self.ctx.is_null() {
                return Err(ffmpeg_next::Error::InvalidData);
            }
            // The same matrix on both sides: YUV→RGB reads with it, RGB→YUV writes with it.
            // RGB is always full range.
            let coefficients = ffi::sws_getCoefficients(key.matrix.colorspace);
            let src_is_rgb = is_rgb(key.src.0);
            let dst_is_rgb = is_rgb(key.dst.0);
            let src_range = if src_is_rgb {
                1
            } else {
                key.matrix.full_range as i32
            };
            let dst_range = if dst_is_rgb {
                1
            } else {
                key.matrix.full_range as i32
            };
            ffi::sws_setColorspaceDetails(
                self.ctx,
                coefficients,
                src_range,
                coefficients,
                dst_range,
                0,
                1 << 16,
                1 << 16,
            );
        }
        self.key = Some(key);
        Ok(())
    }

    fn free(&mut self) {
        if !self.ctx.is_null() {
            // SAFETY: the context was created by sws_getContext and is not used afterwards.
            unsafe { ffi::sws_freeContext(self.ctx) };
            self.ctx = ptr::null_mut();
        }
        self.key = None;
    }
}

impl Drop for Scaler {
    fn drop(&mut self) {
        self.free();
    }
}

fn is_rgb(format: Pixel) -> bool {
    // SAFETY: av_pix_fmt_desc_get returns a static descriptor or null.
    unsafe {
        let desc = ffi::av_pix_fmt_desc_get(format.into());
        !desc.is_null() && ((*desc).flags & ffi::AV_PIX_FMT_FLAG_RGB as u64) != 0
    }
}

/// Copies a (possibly padded) packed RGB24 frame into a tight buffer.
pub(crate) fn copy_rgb24_tight(src: &frame::Video, out: &mut Vec<u8>) {
    let (w, h) = (src.width() as usize, src.height() as usize);
    let stride = src.stride(0);
    let data = src.data(0);
    out.clear();
    out.reserve(w * h * 3);
    for y in 0..h {
        out.extend_from_slice(&data[y * stride..y * stride + w * 3]);
    }
}

/// Copies a tight RGB24 buffer into a packed RGB24 frame of at least that size,
/// replicating the last column and row into any extra width/height (used to pad odd
/// sizes up to the even size yuv420p needs).
pub(crate) fn fill_rgb24_padded(src: &[u8], width: u32, height: u32, dst: &mut frame::Video) {
    let (w, h) = (width as usize, height as usize);
    let (dw, dh) = (dst.width() as usize, dst.height() as usize);
    let stride = dst.stride(0);
    let data = dst.data_mut(0);
    for y in 0..dh {
        let sy = y.min(h - 1);
        let row = &src[sy * w * 3..(sy + 1) * w * 3];
        let out = &mut data[y * stride..y * stride + dw * 3];
        out[..w * 3].copy_from_slice(row);
        let last = [row[(w - 1) * 3], row[(w - 1) * 3 + 1], row[(w - 1) * 3 + 2]];
        for px in out[w * 3..].chunks_exact_mut(3) {
            px.copy_from_slice(&last);
        }
    }
}

/// Even size that yuv420p can hold: odd dimensions are rounded up by one.
pub fn even_size(width: u32, height: u32) -> (u32, u32) {
    (width + (width & 1), height + (height & 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_sizes() {
        assert_eq!(even_size(333, 197), (334, 198));
        assert_eq!(even_size(512, 512), (512, 512));
        assert_eq!(even_size(1, 1), (2, 2));
    }

    #[test]
    fn padding_replicates_the_edges() {
        // 3x1 picture with pixel values 1, 2, 3 padded to 4x2.
        let src: Vec<u8> = [1u8, 2, 3].iter().flat_map(|&v| [v, v, v]).collect();
        let mut dst = frame::Video::new(Pixel::RGB24, 4, 2);
        fill_rgb24_padded(&src, 3, 1, &mut dst);
        let mut tight = Vec::new();
        copy_rgb24_tight(&dst, &mut tight);
        let values: Vec<u8> = tight.chunks(3).map(|p| p[0]).collect();
        assert_eq!(values, vec![1, 2, 3, 3, 1, 2, 3, 3]);
    }

    #[test]
    fn rgb_round_trip_through_yuv444_is_close() {
        let (w, h) = (16u32, 8u32);
        let src: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 256) as u8).collect();
        let mut rgb = frame::Video::new(Pixel::RGB24, w, h);
        fill_rgb24_padded(&src, w, h, &mut rgb);
        let mut yuv = frame::Video::empty();
        let mut back = frame::Video::empty();
        let mut to_yuv = Scaler::new();
        let mut to_rgb = Scaler::new();
        let m = YuvMatrix::BT709_LIMITED;
        to_yuv
            .convert(&rgb, &mut yuv, Pixel::YUV444P, w, h, m)
            .unwrap();
        to_rgb
            .convert(&yuv, &mut back, Pixel::RGB24, w, h, m)
            .unwrap();
        let mut out = Vec::new();
        copy_rgb24_tight(&back, &mut out);
        let max_err = src
            .iter()
            .zip(&out)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        assert!(max_err <= 3, "max error {max_err}");
    }
}
