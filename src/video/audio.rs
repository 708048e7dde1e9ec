//! The output's audio: the source's audio stream, aligned to the rendered frames.
//!
//! Policy:
//! - Codecs MP4 holds (AAC, MP3, AC-3, E-AC-3, Opus, ALAC) are copied packet for packet,
//!   with no re-encoding; only timestamps are shifted.
//! - Anything else (PCM from MOV/MKV/AVI, FLAC, Vorbis, ...) is decoded and re-encoded
//!   to AAC-LC (FFmpeg's native encoder; mono stays mono, more than two channels are
//!   mixed down to stereo; the rate is kept when AAC supports it, else 48 kHz).
//! - Output time 0 is the source's first video frame (plus the start of the rendered
//!   range, if any), so audio stays in sync with the frames.
//! - With a range, audio is cut to it: copied packets overlapping the range are kept
//!   (the first one may start up to one packet, ~21 ms, early; MP4 stores that as an
//!   edit), re-encoded audio is cut to the sample.
//!
//! Audio is read lazily and interleaved with the video packets, so nothing is buffered
//! beyond a fraction of a second whatever the clip's length.

use std::path::{Path, PathBuf};
use std::ptr;

use ffmpeg_next::codec;
use ffmpeg_next::decoder;
use ffmpeg_next::encoder;
use ffmpeg_next::ffi;
use ffmpeg_next::format::context::{Input, Output};
use ffmpeg_next::frame;
use ffmpeg_next::Packet;

use super::error::VideoError;
use super::input::{
    absolute, codec_name, open_input, pick_audio_stream, pick_video_stream, read_packet,
};
use super::timing::TimeBase;

/// What happened to the source's audio.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AudioHandling {
    /// No audio source given, or it has no audio stream.
    None,
    /// Copied without re-encoding.
    Copied { codec: String },
    /// The codec cannot go into MP4; re-encoded to AAC.
    Reencoded { from: String },
}

/// Audio packets are written this far ahead of the video so the muxer interleaves them.
const LEAD_SECS: f64 = 0.25;

/// Codecs copied into MP4 as they are (FFmpeg 5.1's mp4 muxer takes them without
/// `-strict experimental`).
fn mp4_copyable(id: codec::Id) -> bool {
    use codec::Id::*;
    matches!(id, AAC | MP3 | AC3 | EAC3 | OPUS | ALAC)
}

pub(crate) struct AudioTrack {
    source: PathBuf,
    input: Input,
    in_index: usize,
    in_time_base: TimeBase,
    out_index: usize,
    out_time_base: ffmpeg_next::Rational,
    /// Source time (seconds) that becomes output time 0.
    origin_secs: f64,
    /// Output time (seconds) where audio stops, for a range.
    end_secs: Option<f64>,
    /// Drop audio before output time 0 (only when cutting a range).
    trim_start: bool,
    lookahead: Option<Packet>,
    exhausted: bool,
    mode: Mode,
    handling: AudioHandling,
}

enum Mode {
    Copy,
    Reencode(Box<Reencoder>),
}

impl AudioTrack {
    /// Adds an audio stream for `source`'s audio to `muxer`; `None` when the source has
    /// no audio. `range` is in seconds from the source's first video frame.
    pub fn open(
        source: &Path,
        range: Option<std::ops::Range<f64>>,
        muxer: &mut Output,
        target: &Path,
    ) -> Result<Option<Self>, VideoError> {
        let source = absolute(source);
        let mut input = open_input(&source)?;
        let Some(in_index) = pick_audio_stream(&input) else {
            return Ok(None);
        };
        let video_start = pick_video_stream(&input)
            .and_then(|i| input.stream(i))
            .map(|s| {
                let tb = s.time_base();
                if s.start_time() == ffi::AV_NOPTS_VALUE {
                    0.0
                } else {
                    s.start_time() as f64 * tb.numerator() as f64 / tb.denominator() as f64
                }
            })
            .unwrap_or(0.0);
        let stream = input
            .stream(in_index)
            .expect("pick_audio_stream returns an existing index");
        let tb = stream.time_base();
        let in_time_base = TimeBase::new(tb.numerator() as i64, tb.denominator() as i64)
            .ok_or_else(|| VideoError::NotAVideo {
                path: source.clone(),
                reason: format!("the audio stream has an invalid time base {tb}"),
            })?;
        let codec_id = stream.parameters().id();
        let name = codec_name(&stream);
        // SAFETY: the muxer's output format is valid while the muxer lives.
        let mp4_accepts = unsafe {
            ffi::avformat_query_codec(
                (*muxer.as_ptr()).oformat,
                codec_id.into(),
                ffi::FF_COMPLIANCE_NORMAL,
            ) == 1
        };
        let global_header = muxer
            .format()
            .flags()
            .contains(ffmpeg_next::format::Flags::GLOBAL_HEADER);

        let (origin_secs, end_secs, trim_start) = match &range {
            Some(r) => (video_start + r.start, Some(r.end - r.start), true),
            None => (video_start, None, false),
        };
        let window = Window {
            origin_secs,
            end_secs,
        };

        let (mode, handling, out_index) = if mp4_copyable(codec_id) && mp4_accepts {
            let mut out = muxer
                .add_stream(encoder::find(codec::Id::None))
                .map_err(|e| VideoError::ffmpeg(target, "adding the audio stream", e))?;
            out.set_parameters(stream.parameters());
            // SAFETY: clearing the source container's codec tag so MP4 picks its own.
            unsafe { (*out.parameters().as_mut_ptr()).codec_tag = 0 };
            out.set_time_base(tb);
            (
                Mode::Copy,
                AudioHandling::Copied { codec: name },
                out.index(),
            )
        } else {
            let reencoder = Reencoder::new(
                &source,
                &stream,
                in_time_base,
                window,
                muxer,
                target,
                global_header,
            )?;
            let out_index = reencoder.out_index;
            (
                Mode::Reencode(Box::new(reencoder)),
                AudioHandling::Reencoded { from: name },
                out_index,
            )
        };
        ignore_other_streams(&mut input, in_index);
        if trim_start && origin_secs > 1.0 {
            // Start reading shortly before the range instead of at the top of the file.
            let ts = ((origin_secs - 1.0) * ffi::AV_TIME_BASE as f64) as i64;
            // SAFETY: plain call on an open input; on failure reading starts at 0.
            unsafe {
                ffi::avformat_seek_file(input.as_mut_ptr(), -1, i64::MIN, ts, ts, 0);
            }
        }
        Ok(Some(Self {
            source,
            input,
            in_index,
            in_time_base,
            out_index,
            out_time_base: ffmpeg_next::Rational(1, 1),
            origin_secs,
            end_secs,
            trim_start,
            lookahead: None,
            exhausted: false,
            mode,
            handling,
        }))
    }

    pub fn handling(&self) -> &AudioHandling {
        &self.handling
    }

    /// Reads the time base the muxer settled on; call after the header is written.
    pub fn after_header(&mut self, muxer: &Output) {
        if let Some(stream) = muxer.stream(self.out_index) {
            self.out_time_base = stream.time_base();
        }
    }

    /// Writes all audio that starts before output time `until_secs` (+ a small lead).
    pub fn write_until(&mut self, muxer: &mut Output, until_secs: f64) -> Result<(), VideoError> {
        let limit = until_secs + LEAD_SECS;
        loop {
            if self.lookahead.is_none() {
                self.lookahead = self.read_packet()?;
            }
            let Some(packet) = self.lookahead.take() else {
                return Ok(());
            };
            let start = self.output_secs(&packet);
            if start.is_some_and(|s| s >= limit) {
                self.lookahead = Some(packet);
                return Ok(());
            }
            self.process(packet, muxer)?;
        }
    }

    /// Writes the rest of the audio and flushes any encoder.
    pub fn finish(&mut self, muxer: &mut Output) -> Result<(), VideoError> {
        self.write_until(muxer, f64::INFINITY)?;
        if let Mode::Reencode(r) = &mut self.mode {
            r.finish(muxer, &self.source)?;
        }
        Ok(())
    }

    fn read_packet(&mut self) -> Result<Option<Packet>, VideoError> {
        if self.exhausted {
            return Ok(None);
        }
        loop {
            match read_packet(&mut self.input) {
                Ok(packet) if packet.stream() == self.in_index => return Ok(Some(packet)),
                Ok(_) => continue,
                Err(ffmpeg_next::Error::Eof) => {
                    self.exhausted = true;
                    return Ok(None);
                }
                Err(e) => {
                    return Err(VideoError::Truncated {
                        path: self.source.clone(),
                        frame: None,
                        detail: format!("reading the audio stream failed: {e}"),
                    })
                }
            }
        }
    }

    fn output_secs(&self, packet: &Packet) -> Option<f64> {
        packet
            .pts()
            .or(packet.dts())
            .map(|ts| self.in_time_base.to_secs(ts) - self.origin_secs)
    }

    fn process(&mut self, mut packet: Packet, muxer: &mut Output) -> Result<(), VideoError> {
        let Some(start) = self.output_secs(&packet) else {
            return Ok(()); // untimed audio cannot be placed
        };
        let duration = self.in_time_base.to_secs(packet.duration().max(0));
        if let Some(end) = self.end_secs {
            if start >= end {
                self.exhausted = true;
                return Ok(());
            }
        }
        match &mut self.mode {
            Mode::Copy => {
                if self.trim_start && start + duration <= 1e-9 {
                    return Ok(());
                }
                let shift = self.in_time_base.from_secs(self.origin_secs);
                packet.set_pts(packet.pts().map(|t| t - shift));
                packet.set_dts(packet.dts().map(|t| t - shift));
                packet.set_stream(self.out_index);
                packet.set_position(-1);
                packet.rescale_ts(
                    ffmpeg_next::Rational(
                        self.in_time_base.num as i32,
                        self.in_time_base.den as i32,
                    ),
                    self.out_time_base,
                );
                packet
                    .write_interleaved(muxer)
                    .map_err(|e| VideoError::ffmpeg(&self.source, "writing copied audio", e))
            }
            Mode::Reencode(r) => r.decode_packet(&packet, muxer, &self.source),
        }
    }
}

#[derive(Clone, Copy)]
struct Window {
    origin_secs: f64,
    end_secs: Option<f64>,
}

fn ignore_other_streams(input: &mut Input, keep: usize) {
    // SAFETY: adjusting the `discard` field of the context's own streams.
    unsafe {
        let ctx = input.as_mut_ptr();
        for i in 0..(*ctx).nb_streams as usize {
            if i != keep {
                (**(*ctx).streams.add(i)).discard = ffi::AVDiscard::AVDISCARD_ALL;
            }
        }
    }
}

/// Decode → resample to planar float → cut → AAC.
struct Reencoder {
    in_time_base: TimeBase,
    window: Window,
    decoder: decoder::Audio,
    encoder: encoder::Audio,
    out_index: usize,
    rate: i32,
    channels: usize,
    frame_size: usize,
    pads_last_frame: bool,
    resampler: Option<Resampler>,
    decoded: frame::Audio,
    /// Planar samples waiting for a full encoder frame.
    fifo: Vec<Vec<f32>>,
    /// Output sample position of `fifo[c][0]`.
    fifo_pos: Option<i64>,
    /// Output sample position of the next resampled sample.
    stream_pos: Option<i64>,
    /// Output sample position where the window ends.
    end_sample: Option<i64>,
    scratch: Vec<Vec<f32>>,
}

impl Reencoder {
    fn new(
        source: &Path,
        stream: &ffmpeg_next::format::stream::Stream,
        in_time_base: TimeBase,
        window: Window,
        muxer: &mut Output,
        target: &Path,
        global_header: bool,
    ) -> Result<Self, VideoError> {
        let context = codec::Context::from_parameters(stream.parameters())
            .map_err(|e| VideoError::ffmpeg(source, "setting up the audio decoder", e))?;
        let decoder = context
            .decoder()
            .audio()
            .map_err(|e| VideoError::ffmpeg(source, "opening the audio decoder", e))?;
        // SAFETY: reading plain fields of the opened decoder.
        let (in_rate, in_channels) = unsafe {
            let d = decoder.as_ptr();
            ((*d).sample_rate, (*d).ch_layout.nb_channels.max(1))
        };
        let aac = encoder::find(codec::Id::AAC).ok_or_else(|| VideoError::EncoderMissing {
            path: target.to_path_buf(),
            name: "aac".into(),
        })?;
        let rate = supported_rate(&aac, in_rate);
        let channels = in_channels.min(2) as usize;

        let mut out = muxer
            .add_stream(aac)
            .map_err(|e| VideoError::ffmpeg(target, "adding the audio stream", e))?;
        let out_index = out.index();
        let mut enc = codec::Context::new_with_codec(aac)
            .encoder()
            .audio()
            .map_err(|e| VideoError::ffmpeg(target, "setting up the AAC encoder", e))?;
        // SAFETY: configuring plain fields (and the channel layout through its API)
        // before the encoder is opened.
        unsafe {
            let e = enc.as_mut_ptr();
            (*e).sample_fmt = ffi::AVSampleFormat::AV_SAMPLE_FMT_FLTP;
            (*e).sample_rate = rate;
            ffi::av_channel_layout_uninit(&mut (*e).ch_layout);
            ffi::av_channel_layout_default(&mut (*e).ch_layout, channels as i32);
            (*e).bit_rate = 64_000 * channels as i64;
            (*e).time_base = ffi::AVRational { num: 1, den: rate };
            if global_header {
                (*e).flags |= ffi::AV_CODEC_FLAG_GLOBAL_HEADER as i32;
            }
        }
        let encoder = enc
            .open_as(aac)
            .map_err(|e| VideoError::ffmpeg(target, "opening the AAC encoder", e))?;
        out.set_parameters(&encoder);
        out.set_time_base(ffmpeg_next::Rational(1, rate));
        // SAFETY: reading plain fields of the opened encoder and its codec.
        let (frame_size, pads_last_frame) = unsafe {
            let e = encoder.as_ptr();
            let caps = (*(*e).codec).capabilities;
            let small_last = caps & ffi::AV_CODEC_CAP_SMALL_LAST_FRAME as i32 != 0;
            ((*e).frame_size.max(1) as usize, !small_last)
        };
        Ok(Self {
            in_time_base,
            window,
            decoder,
            encoder,
            out_index,
            rate,
            channels,
            frame_size,
            pads_last_frame,
            resampler: None,
            decoded: frame::Audio::empty(),
            fifo: vec![Vec::new(); channels],
            fifo_pos: None,
            stream_pos: None,
            end_sample: window.end_secs.map(|e| (e * rate as f64).round() as i64),
            scratch: vec![Vec::new(); channels],
        })
    }

    fn decode_packet(
        &mut self,
        packet: &Packet,
        muxer: &mut Output,
        source: &Path,
    ) -> Result<(), VideoError> {
        self.decoder
            .send_packet(packet)
            .map_err(|e| VideoError::ffmpeg(source, "decoding audio", e))?;
        self.drain_decoder(muxer, source)
    }

    fn drain_decoder(&mut self, muxer: &mut Output, source: &Path) -> Result<(), VideoError> {
        loop {
            match self.decoder.receive_frame(&mut self.decoded) {
                Ok(()) => {}
                Err(ffmpeg_next::Error::Eof) => return Ok(()),
                Err(ffmpeg_next::Error::Other { errno }) if errno == libc::EAGAIN => return Ok(()),
                Err(e) => return Err(VideoError::ffmpeg(source, "decoding audio", e)),
            }
            if self.stream_pos.is_none() {
                let secs = self
                    .decoded
                    .timestamp()
                    .map(|t| self.in_time_base.to_secs(t) - self.window.origin_secs)
                    .unwrap_or(0.0);
                self.stream_pos = Some((secs * self.rate as f64).round() as i64);
            }
            let resampler = match &mut self.resampler {
                Some(r) => r,
                None => self.resampler.insert(
                    Resampler::new(&self.decoded, self.channels, self.rate).map_err(|e| {
                        VideoError::ffmpeg(source, "setting up audio resampling", e)
                    })?,
                ),
            };
            let n = resampler
                .convert(Some(&self.decoded), &mut self.scratch)
                .map_err(|e| VideoError::ffmpeg(source, "resampling audio", e))?;
            self.push_scratch(n);
            self.encode_full_frames(muxer, source)?;
        }
    }

    /// Appends the first `n` resampled samples, keeping only positions in the window.
    fn push_scratch(&mut self, n: usize) {
        let pos = self.stream_pos.unwrap_or(0);
        self.stream_pos = Some(pos + n as i64);
        let lo = (-pos).clamp(0, n as i64) as usize;
        let hi = self
            .end_sample
            .map(|e| (e - pos).clamp(0, n as i64) as usize)
            .unwrap_or(n);
        if lo >= hi {
            return;
        }
        if self.fifo_pos.is_none() {
            self.fifo_pos = Some(pos + lo as i64);
        }
        for (fifo, scratch) in self.fifo.iter_mut().zip(&self.scratch) {
            fifo.extend_from_slice(&scratch[lo..hi]);
        }
    }

    fn encode_full_frames(&mut self, muxer: &mut Output, source: &Path) -> Result<(), VideoError> {
        while self.fifo[0].len() >= self.frame_size {
            self.encode_fifo_frame(self.frame_size, muxer, source)?;
        }
        Ok(())
    }

    fn encode_fifo_frame(
        &mut self,
        samples: usize,
        muxer: &mut Output,
        source: &Path,
    ) -> Result<(), VideoError> {
        let alloc_samples = if self.pads_last_frame {
            self.frame_size
        } else {
            samples
        };
        let mut frame = frame::Audio::empty();
        // SAFETY: the frame is configured (format, size, the encoder's channel layout)
        // and given buffers before its planes are written.
        unsafe {
            let f = frame.as_mut_ptr();
            (*f).format = ffi::AVSampleFormat::AV_SAMPLE_FMT_FLTP as i32;
            (*f).nb_samples = alloc_samples as i32;
            (*f).sample_rate = self.rate;
            let ret = ffi::av_channel_layout_copy(
                &mut (*f).ch_layout,
                &(*self.encoder.as_ptr()).ch_layout,
            );
            if ret < 0 {
                return Err(VideoError::ffmpeg(
                    source,
                    "preparing audio",
                    ffmpeg_next::Error::from(ret),
                ));
            }
            let ret = ffi::av_frame_get_buffer(f, 0);
            if ret < 0 {
                return Err(VideoError::ffmpeg(
                    source,
                    "preparing audio",
                    ffmpeg_next::Error::from(ret),
                ));
            }
            for (c, fifo) in self.fifo.iter_mut().enumerate() {
                let plane = std::slice::from_raw_parts_mut((*f).data[c] as *mut f32, alloc_samples);
                plane[..samples].copy_from_slice(&fifo[..samples]);
                plane[samples..].fill(0.0);
                fifo.drain(..samples);
            }
        }
        let pts = self.fifo_pos.unwrap_or(0).max(0);
        frame.set_pts(Some(pts));
        self.fifo_pos = Some(self.fifo_pos.unwrap_or(0) + samples as i64);
        self.encoder
            .send_frame(&frame)
            .map_err(|e| VideoError::ffmpeg(source, "encoding audio", e))?;
        self.write_packets(muxer, source)
    }

    fn write_packets(&mut self, muxer: &mut Output, source: &Path) -> Result<(), VideoError> {
        let out_tb = muxer
            .stream(self.out_index)
            .map(|s| s.time_base())
            .unwrap_or(ffmpeg_next::Rational(1, self.rate));
        let mut packet = Packet::empty();
        loop {
            match self.encoder.receive_packet(&mut packet) {
                Ok(()) => {}
                Err(ffmpeg_next::Error::Eof) => return Ok(()),
                Err(ffmpeg_next::Error::Other { errno }) if errno == libc::EAGAIN => return Ok(()),
                Err(e) => return Err(VideoError::ffmpeg(source, "encoding audio", e)),
            }
            packet.set_stream(self.out_index);
            packet.rescale_ts(ffmpeg_next::Rational(1, self.rate), out_tb);
            packet
                .write_interleaved(muxer)
                .map_err(|e| VideoError::ffmpeg(source, "writing audio", e))?;
        }
    }

    fn finish(&mut self, muxer: &mut Output, source: &Path) -> Result<(), VideoError> {
        // Pictures still inside the decoder, then samples still inside the resampler.
        if self.decoder.send_eof().is_ok() {
            self.drain_decoder(muxer, source)?;
        }
        if let Some(resampler) = &mut self.resampler {
            let n = resampler
                .convert(None, &mut self.scratch)
                .map_err(|e| VideoError::ffmpeg(source, "resampling audio", e))?;
            self.push_scratch(n);
        }
        self.encode_full_frames(muxer, source)?;
        let rest = self.fifo[0].len();
        if rest > 0 {
            self.encode_fifo_frame(rest, muxer, source)?;
        }
        self.encoder
            .send_eof()
            .map_err(|e| VideoError::ffmpeg(source, "finishing the audio encoder", e))?;
        self.write_packets(muxer, source)
    }
}

/// The AAC encoder's supported rate closest to keeping `rate` (else 48 kHz).
fn supported_rate(codec: &ffmpeg_next::Codec, rate: i32) -> i32 {
    // SAFETY: `supported_samplerates` is null or a zero-terminated static array.
    unsafe {
        let mut p = (*codec.as_ptr()).supported_samplerates;
        if p.is_null() {
            return if rate > 0 { rate } else { 48_000 };
        }
        while *p != 0 {
            if *p == rate {
                return rate;
            }
            p = p.add(1);
        }
    }
    48_000
}

/// libswresample to planar f32 at the encoder's rate and channel count.
struct Resampler {
    ctx: *mut ffi::SwrContext,
}

// SAFETY: the context is owned exclusively and used through `&mut self`.
unsafe impl Send for Resampler {}

impl Resampler {
    fn new(first: &frame::Audio, channels: usize, rate: i32) -> Result<Self, ffmpeg_next::Error> {
        let mut ctx: *mut ffi::SwrContext = ptr::null_mut();
        // SAFETY: layouts are initialised before use and released after; the context is
        // freed on every failure path.
        unsafe {
            let f = first.as_ptr();
            let mut in_layout: ffi::AVChannelLayout = std::mem::zeroed();
            if (*f).ch_layout.order == ffi::AVChannelOrder::AV_CHANNEL_ORDER_UNSPEC
                || (*f).ch_layout.nb_channels <= 0
            {
                ffi::av_channel_layout_default(&mut in_layout, (*f).ch_layout.nb_channels.max(1));
            } else {
                let ret = ffi::av_channel_layout_copy(&mut in_layout, &(*f).ch_layout);
                if ret < 0 {
                    return Err(ffmpeg_next::Error::from(ret));
                }
            }
            let mut out_layout: ffi::AVChannelLayout = std::mem::zeroed();
            ffi::av_channel_layout_default(&mut out_layout, channels as i32);
            let in_format: ffi::AVSampleFormat = std::mem::transmute((*f).format);
            let ret = ffi::swr_alloc_set_opts2(
                &mut ctx,
                &mut out_layout,
                ffi::AVSampleFormat::AV_SAMPLE_FMT_FLTP,
                rate,
                &mut in_layout,
                in_format,
                (*f).sample_rate,
                0,
                ptr::null_mut(),
            );
            ffi::av_channel_layout_uninit(&mut in_layout);
            ffi::av_channel_layout_uninit(&mut out_layout);
            if ret < 0 {
                ffi::swr_free(&mut ctx);
                return Err(ffmpeg_next::Error::from(ret));
            }
            let ret = ffi::swr_init(ctx);
            if ret < 0 {
                ffi::swr_free(&mut ctx);
                return Err(ffmpeg_next::Error::from(ret));
            }
        }
        Ok(Self { ctx })
    }

    /// Converts `input` (or flushes when `None`) into `out` planes; returns the number of
    /// samples per channel written.
    fn convert(
        &mut self,
        input: Option<&frame::Audio>,
        out: &mut [Vec<f32>],
    ) -> Result<usize, ffmpeg_next::Error> {
        // SAFETY: output planes are sized for the count swr_get_out_samples promises;
        // input pointers come from a decoded frame with `nb_samples` samples.
        unsafe {
            let in_samples = input.map_or(0, |f| (*f.as_ptr()).nb_samples);
            let capacity = ffi::swr_get_out_samples(self.ctx, in_samples).max(0) as usize;
            for plane in out.iter_mut() {
                plane.clear();
                plane.resize(capacity, 0.0);
            }
            let mut out_ptrs: Vec<*mut u8> =
                out.iter_mut().map(|p| p.as_mut_ptr() as *mut u8).collect();
            let in_ptrs: *mut *const u8 = match input {
                Some(f) => (*f.as_ptr()).extended_data as *mut *const u8,
                None => ptr::null_mut(),
            };
            let n = ffi::swr_convert(
                self.ctx,
                out_ptrs.as_mut_ptr(),
                capacity as i32,
                in_ptrs,
                in_samples,
            );
            if n < 0 {
                return Err(ffmpeg_next::Error::from(n));
            }
            Ok(n as usize)
        }
    }
}

impl Drop for Resampler {
    fn drop(&mut self) {
        // SAFETY: the context came from swr_alloc_set_opts2 and is not used afterwards.
        unsafe { ffi::swr_free(&mut self.ctx) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_policy() {
        assert!(mp4_copyable(codec::Id::AAC));
        assert!(mp4_copyable(codec::Id::OPUS));
        assert!(!mp4_copyable(codec::Id::PCM_S16LE));
        assert!(!mp4_copyable(codec::Id::FLAC));
        assert!(!mp4_copyable(codec::Id::VORBIS));
    }

    #[test]
    fn aac_rates() {
        super::super::input::init_ffmpeg();
        let aac = encoder::find(codec::Id::AAC).unwrap();
        assert_eq!(supported_rate(&aac, 44_100), 44_100);
        assert_eq!(supported_rate(&aac, 48_000), 48_000);
        assert_eq!(supported_rate(&aac, 37_000), 48_000);
    }
}
