//! Encoding frames to H.264 MP4 (libx264, yuv420p, constant rate), with the source's
//! audio.
//!
//! - Colour: frames are converted with the BT.709 matrix to limited-range yuv420p and
//!   tagged BT.709, so players show the colours that were rendered.
//! - Odd sizes: yuv420p needs even dimensions, so a 333×197 frame is encoded as 334×198
//!   with the last column and row repeated (nothing is cropped or scaled). Render at an
//!   even size to avoid the extra line.
//! - Safety: written to `<stem>.tmp.mp4` and renamed on [`Mp4Writer::finish`]; an
//!   existing target is refused unless `overwrite`; dropping an unfinished writer
//!   removes the temporary file.
//! - The `moov` index is moved to the front (`+faststart`) so outputs stream on the web.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::ptr;

use ffmpeg_next::codec;
use ffmpeg_next::encoder;
use ffmpeg_next::ffi;
use ffmpeg_next::format::context::Output;
use ffmpeg_next::format::Pixel;
use ffmpeg_next::frame;
use ffmpeg_next::{Dictionary, Packet};

use super::audio::{AudioHandling, AudioTrack};
use super::error::VideoError;
use super::frame::{rgb_len, Frame};
use super::input::{file_url, init_ffmpeg};
use super::output::PendingFile;
use super::scale::{even_size, fill_rgb24_padded, Scaler, YuvMatrix};
use crate::preset::rational::Rational;

/// The H.264 encoder (Debian's libavcodec is built with `--enable-libx264`).
pub const H264_ENCODER: &str = "libx264";

/// How to write an MP4.
#[derive(Clone, Debug, PartialEq)]
pub struct Mp4Settings {
    /// Size of the frames that will be written (odd sizes are padded, see module docs).
    pub width: u32,
    pub height: u32,
    pub fps: Rational,
    /// x264 constant rate factor, 0 (lossless) to 51; 18 is visually transparent.
    pub crf: f32,
    /// x264 speed preset: ultrafast ... medium ... veryslow.
    pub preset: String,
    /// Copy the audio of this file (normally the input video). No audio if `None` or if
    /// the file has none.
    pub audio_source: Option<PathBuf>,
    /// Only this part of the audio, in seconds from the source's first video frame (for
    /// frames `A..B` at `fps`: see [`frames_to_seconds`]).
    pub audio_range: Option<Range<f64>>,
    /// Replace an existing file at the target path.
    pub overwrite: bool,
}

impl Mp4Settings {
    /// CRF 18, preset "medium", no audio, no overwrite.
    pub fn new(width: u32, height: u32, fps: Rational) -> Self {
        Self {
            width,
            height,
            fps,
            crf: 18.0,
            preset: "medium".into(),
            audio_source: None,
            audio_range: None,
            overwrite: false,
        }
    }
}

/// Seconds covered by frames `range` at `fps` (frame `i` spans `[i/fps, (i+1)/fps)`).
pub fn frames_to_seconds(range: &Range<u64>, fps: Rational) -> Range<f64> {
    fps.frame_time_secs(range.start)..fps.frame_time_secs(range.end)
}

/// What [`Mp4Writer::finish`] produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Mp4Summary {
    pub path: PathBuf,
    pub frames: u64,
    /// Encoded size (even; see the module docs on odd sizes).
    pub encoded_width: u32,
    pub encoded_height: u32,
    pub audio: AudioHandling,
}

const X264_PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

/// Writes frames to an H.264 MP4. See the module docs.
pub struct Mp4Writer {
    // Field order matters: the muxer (which holds the file open) drops before `pending`
    // deletes an unfinished temporary file.
    muxer: Output,
    encoder: encoder::Video,
    audio: Option<AudioTrack>,
    pending: PendingFile,
    settings: Mp4Settings,
    coded_width: u32,
    coded_height: u32,
    stream_index: usize,
    encoder_time_base: ffmpeg_next::Rational,
    stream_time_base: ffmpeg_next::Rational,
    scaler: Scaler,
    rgb: frame::Video,
    yuv: frame::Video,
    packet: Packet,
    frames: u64,
}

impl Mp4Writer {
    /// Prepares `path` (checks, temporary file, encoder, audio stream, header).
    pub fn create(path: impl AsRef<Path>, settings: Mp4Settings) -> Result<Self, VideoError> {
        init_ffmpeg();
        let path = path.as_ref();
        validate(path, &settings)?;
        let pending = PendingFile::create(path, settings.overwrite)?;
        let target = pending.target().to_path_buf();
        let codec =
            encoder::find_by_name(H264_ENCODER).ok_or_else(|| VideoError::EncoderMissing {
                path: target.clone(),
                name: H264_ENCODER.into(),
            })?;

        let mut muxer = open_muxer(pending.temp(), &target)?;
        let global_header = muxer
            .format()
            .flags()
            .contains(ffmpeg_next::format::Flags::GLOBAL_HEADER);
        let (coded_width, coded_height) = even_size(settings.width, settings.height);
        let fps = settings.fps;
        let encoder_time_base = ffmpeg_next::Rational(fps.den as i32, fps.num as i32);

        let mut stream = muxer
            .add_stream(codec)
            .map_err(|e| VideoError::ffmpeg(&target, "adding the video stream", e))?;
        let stream_index = stream.index();
        let mut enc = codec::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| VideoError::ffmpeg(&target, "setting up the H.264 encoder", e))?;
        enc.set_width(coded_width);
        enc.set_height(coded_height);
        enc.set_format(Pixel::YUV420P);
        enc.set_time_base(encoder_time_base);
        enc.set_frame_rate(Some(ffmpeg_next::Rational(fps.num as i32, fps.den as i32)));
        enc.set_aspect_ratio(ffmpeg_next::Rational(1, 1));
        // SAFETY: plain fields set before the encoder is opened.
        unsafe {
            let e = enc.as_mut_ptr();
            (*e).color_primaries = ffi::AVColorPrimaries::AVCOL_PRI_BT709;
            (*e).color_trc = ffi::AVColorTransferCharacteristic::AVCOL_TRC_BT709;
            (*e).colorspace = ffi::AVColorSpace::AVCOL_SPC_BT709;
            (*e).color_range = ffi::AVColorRange::AVCOL_RANGE_MPEG;
            if global_header {
                (*e).flags |= ffi::AV_CODEC_FLAG_GLOBAL_HEADER as i32;
            }
        }
        let mut options = Dictionary::new();
        options.set("crf", &format!("{}", settings.crf));
        options.set("preset", &settings.preset);
        let encoder = enc
            .open_as_with(codec, options)
            .map_err(|e| VideoError::ffmpeg(&target, "opening the H.264 encoder", e))?;
        stream.set_parameters(&encoder);
        stream.set_time_base(encoder_time_base);
        stream.set_avg_frame_rate(ffmpeg_next::Rational(fps.num as i32, fps.den as i32));

        let mut audio = match &settings.audio_source {
            Some(source) => {
                AudioTrack::open(source, settings.audio_range.clone(), &mut muxer, &target)?
            }
            None => None,
        };

        let mut header_options = Dictionary::new();
        header_options.set("movflags", "+faststart");
        muxer
            .write_header_with(header_options)
            .map_err(|e| VideoError::ffmpeg(&target, "writing the MP4 header", e))?;
        let stream_time_base = muxer
            .stream(stream_index)
            .map(|s| s.time_base())
            .unwrap_or(encoder_time_base);
        if let Some(audio) = &mut audio {
            audio.after_header(&muxer);
        }

        Ok(Self {
            muxer,
            encoder,
            audio,
            pending,
            coded_width,
            coded_height,
            stream_index,
            encoder_time_base,
            stream_time_base,
            scaler: Scaler::new(),
            rgb: frame::Video::new(Pixel::RGB24, coded_width, coded_height),
            yuv: frame::Video::empty(),
            packet: Packet::empty(),
            frames: 0,
            settings,
        })
    }

    /// The final path (absolute).
    pub fn path(&self) -> &Path {
        self.pending.target()
    }

    /// Frames written so far.
    pub fn frames_written(&self) -> u64 {
        self.frames
    }

    /// Encodes one frame; frames are shown in the order written, one per 1/fps.
    pub fn write(&mut self, frame: &Frame) -> Result<(), VideoError> {
        let (w, h) = (self.settings.width, self.settings.height);
        if frame.width != w || frame.height != h || frame.data.len() != rgb_len(w, h) {
            return Err(VideoError::FrameMismatch {
                path: self.path().to_path_buf(),
                frame: frame.index,
                width: w,
                height: h,
                got_width: frame.width,
                got_height: frame.height,
                got_bytes: frame.data.len(),
            });
        }
        fill_rgb24_padded(&frame.data, w, h, &mut self.rgb);
        let (cw, ch) = (self.coded_width, self.coded_height);
        self.scaler
            .convert(
                &self.rgb,
                &mut self.yuv,
                Pixel::YUV420P,
                cw,
                ch,
                YuvMatrix::BT709_LIMITED,
            )
            .map_err(|e| VideoError::ffmpeg(self.pending.target(), "converting to yuv420p", e))?;
        self.yuv.set_pts(Some(self.frames as i64));
        self.encoder.send_frame(&self.yuv).map_err(|e| {
            VideoError::ffmpeg(
                self.pending.target(),
                format!("encoding frame {}", frame.index),
                e,
            )
        })?;
        self.frames += 1;
        self.write_packets()
    }

    /// Flushes the encoder, writes the remaining audio and the index, and renames the
    /// temporary file onto the target.
    pub fn finish(mut self) -> Result<Mp4Summary, VideoError> {
        if self.frames == 0 {
            return Err(VideoError::NothingWritten {
                path: self.path().to_path_buf(),
            });
        }
        self.encoder
            .send_eof()
            .map_err(|e| VideoError::ffmpeg(self.pending.target(), "flushing the encoder", e))?;
        self.write_packets()?;
        if let Some(audio) = &mut self.audio {
            audio.finish(&mut self.muxer)?;
        }
        self.muxer
            .write_trailer()
            .map_err(|e| VideoError::ffmpeg(self.pending.target(), "writing the MP4 index", e))?;
        let audio = self
            .audio
            .as_ref()
            .map(|a| a.handling().clone())
            .unwrap_or(AudioHandling::None);
        let Self {
            muxer,
            pending,
            frames,
            coded_width,
            coded_height,
            ..
        } = self;
        drop(muxer); // closes the file before it is renamed
        let path = pending.commit()?;
        Ok(Mp4Summary {
            path,
            frames,
            encoded_width: coded_width,
            encoded_height: coded_height,
            audio,
        })
    }

    fn write_packets(&mut self) -> Result<(), VideoError> {
        loop {
            match self.encoder.receive_packet(&mut self.packet) {
                Ok(()) => {}
                Err(ffmpeg_next::Error::Eof) => return Ok(()),
                Err(ffmpeg_next::Error::Other { errno }) if errno == libc::EAGAIN => return Ok(()),
                Err(e) => {
                    return Err(VideoError::ffmpeg(
                        self.pending.target(),
                        "encoding video",
                        e,
                    ))
                }
            }
            if self.packet.duration() <= 0 {
                self.packet.set_duration(1);
            }
            self.packet.set_stream(self.stream_index);
            self.packet
                .rescale_ts(self.encoder_time_base, self.stream_time_base);
            if let Some(audio) = &mut self.audio {
                let tb = self.stream_time_base;
                let ts = self.packet.dts().or(self.packet.pts()).unwrap_or(0);
                let secs = ts as f64 * tb.numerator() as f64 / tb.denominator() as f64;
                audio.write_until(&mut self.muxer, secs)?;
            }
            self.packet
                .write_interleaved(&mut self.muxer)
                .map_err(|e| VideoError::ffmpeg(self.pending.target(), "writing video", e))?;
        }
    }
}

impl std::fmt::Debug for Mp4Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mp4Writer")
            .field("path", &self.pending.target())
            .field("settings", &self.settings)
            .field("frames", &self.frames)
            .finish()
    }
}

fn validate(path: &Path, settings: &Mp4Settings) -> Result<(), VideoError> {
    let invalid = |reason: String| VideoError::InvalidSettings {
        path: path.to_path_buf(),
        reason,
    };
    if settings.width == 0 || settings.height == 0 {
        return Err(invalid(format!(
            "frame size {}x{} is empty",
            settings.width, settings.height
        )));
    }
    // x264's own limit for H.264 level 6.2 pictures.
    if settings.width > 16384 || settings.height > 16384 {
        return Err(invalid(format!(
            "frame size {}x{} is larger than H.264 allows (16384)",
            settings.width, settings.height
        )));
    }
    if !(settings.crf.is_finite() && (0.0..=51.0).contains(&settings.crf)) {
        return Err(invalid(format!("crf {} is outside 0..=51", settings.crf)));
    }
    if !X264_PRESETS.contains(&settings.preset.as_str()) {
        return Err(invalid(format!(
            "unknown x264 preset {:?} (one of {})",
            settings.preset,
            X264_PRESETS.join(", ")
        )));
    }
    if let Some(r) = &settings.audio_range {
        if !(r.start.is_finite() && r.end.is_finite() && r.start >= 0.0 && r.start < r.end) {
            return Err(invalid(format!(
                "audio range {}..{} s is empty or negative",
                r.start, r.end
            )));
        }
    }
    Ok(())
}

/// An MP4 muxer writing to `temp` (a `file:` URL, so any file name works).
fn open_muxer(temp: &Path, target: &Path) -> Result<Output, VideoError> {
    let url = file_url(temp)?;
    let mut ctx: *mut ffi::AVFormatContext = ptr::null_mut();
    // SAFETY: allocate the context, then open its I/O; on failure everything allocated
    // here is freed; on success ownership moves into `Output`.
    unsafe {
        let ret = ffi::avformat_alloc_output_context2(
            &mut ctx,
            ptr::null(),
            c"mp4".as_ptr(),
            url.as_ptr(),
        );
        if ret < 0 || ctx.is_null() {
            return Err(VideoError::ffmpeg(
                target,
                "creating the MP4 muxer",
                ffmpeg_next::Error::from(ret),
            ));
        }
        let ret = ffi::avio_open(&mut (*ctx).pb, url.as_ptr(), ffi::AVIO_FLAG_WRITE);
        if ret < 0 {
            ffi::avformat_free_context(ctx);
            return Err(VideoError::Unwritable {
                path: target.to_path_buf(),
                reason: format!(
                    "cannot open {}: {}",
                    temp.display(),
                    ffmpeg_next::Error::from(ret)
                ),
            });
        }
        Ok(Output::wrap(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_ranges_become_seconds() {
        let fps = Rational::integer(24).unwrap();
        assert_eq!(frames_to_seconds(&(24..72), fps), 1.0..3.0);
        let ntsc = Rational::new(30000, 1001).unwrap();
        let r = frames_to_seconds(&(0..30), ntsc);
        assert!((r.end - 1.001).abs() < 1e-12);
    }

    #[test]
    fn settings_are_validated() {
        let p = Path::new("out.mp4");
        let ok = Mp4Settings::new(64, 64, Rational::integer(24).unwrap());
        assert!(validate(p, &ok).is_ok());
        for bad in [
            Mp4Settings {
                width: 0,
                ..ok.clone()
            },
            Mp4Settings {
                crf: 60.0,
                ..ok.clone()
            },
            Mp4Settings {
                crf: f32::NAN,
                ..ok.clone()
            },
            Mp4Settings {
                preset: "fastest".into(),
                ..ok.clone()
            },
            Mp4Settings {
                audio_range: Some(2.0..1.0),
                ..ok.clone()
            },
        ] {
            assert!(matches!(
                validate(p, &bad),
                Err(VideoError::InvalidSettings { .. })
            ));
        }
    }

    #[test]
    fn writer_can_move_to_a_pipeline_thread() {
        fn is_send<T: Send>() {}
        is_send::<Mp4Writer>();
    }
}
