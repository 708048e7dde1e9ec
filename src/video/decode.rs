//! Decoding a video into upright RGB frames on a constant-rate grid.
//!
//! The reader yields exactly `info().frame_count` frames: decoded pictures are placed on
//! the output grid by presentation time (see [`timing`](super::timing)), duplicated over
//! gaps and dropped where several share a slot. Memory is flat: besides FFmpeg's own
//! decoder state it holds one decoded picture waiting for its slot and one converted RGB
//! copy of it.
//!
//! Damage: a file that ends before what its headers promise is refused at open with
//! [`VideoError::Truncated`] naming the first missing frame (or read up to there with
//! [`ReadOptions::allow_truncated`]). Packets the decoder rejects are skipped like
//! FFmpeg's tools do and counted ([`VideoReader::skipped_packets`]); a long run of them
//! ends reading with [`VideoError::DecodeFailed`] naming the frame. If pictures stop
//! before the last frame the file lists, the reader ends with `Truncated` rather than
//! silently repeating the last picture.

use std::path::Path;

use ffmpeg_next::codec;
use ffmpeg_next::decoder;
use ffmpeg_next::ffi;
use ffmpeg_next::format::context::Input;
use ffmpeg_next::format::Pixel;
use ffmpeg_next::frame;

use super::error::VideoError;
use super::frame::Frame;
use super::input::{open_input, read_packet};
use super::orientation::Orientation;
use super::probe::{plan, scan, ReadOptions, ReadPlan, StreamScan, VideoInfo};
use super::scale::{copy_rgb24_tight, Scaler, YuvMatrix};
use super::timing::{slot_of, slot_start_ticks, CfrGrid};

/// Most decoder threads we ask for; the pipeline's other stages need the cores more.
const MAX_DECODER_THREADS: usize = 4;

/// Rejected packets in a row after which a stream counts as undecodable.
const MAX_CONSECUTIVE_DECODE_ERRORS: u32 = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Packets are being fed to the decoder.
    Reading,
    /// End of file reached, the decoder is returning its last pictures.
    Draining,
    /// All frames yielded (or an error was returned).
    Done,
}

/// Iterator over the frames of a video. See the module docs.
pub struct VideoReader {
    scan: StreamScan,
    plan: ReadPlan,
    input: Input,
    decoder: decoder::Video,
    state: State,
    grid: CfrGrid,
    /// Whether a seek positioned the input before `plan.range.start`.
    seeked: bool,
    /// Receives the decoder's next picture.
    decoded: frame::Video,
    /// The picture currently filling output slots.
    held: frame::Video,
    /// `held` converted to upright tight RGB, once needed.
    held_rgb: Option<Vec<u8>>,
    /// `decoded` holds a picture that replaces `held` once `pending` copies are out.
    incoming: bool,
    pending: u64,
    next_index: u64,
    last_slot: Option<i64>,
    max_decoded_pts: Option<i64>,
    skipped_packets: u64,
    consecutive_errors: u32,
    scaler: Scaler,
    rgb: frame::Video,
    scratch: Vec<u8>,
}

impl VideoReader {
    /// Opens `path` with default options (whole clip, the stream's own rate).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, VideoError> {
        Self::open_with(path, ReadOptions::default())
    }

    /// Opens `path` with a frame rate override, a frame range or a truncation policy.
    pub fn open_with(path: impl AsRef<Path>, options: ReadOptions) -> Result<Self, VideoError> {
        let scan = scan(path.as_ref())?;
        let plan = plan(&scan, &options)?;
        Self::start(scan, plan, true)
    }

    /// What this reader yields.
    pub fn info(&self) -> &VideoInfo {
        &self.plan.info
    }

    /// The file being read (absolute).
    pub fn path(&self) -> &Path {
        &self.scan.path
    }

    /// Damaged packets the decoder rejected so far (their slots show the previous
    /// picture). Worth a warning when non-zero.
    pub fn skipped_packets(&self) -> u64 {
        self.skipped_packets
    }

    fn start(scan: StreamScan, plan: ReadPlan, allow_seek: bool) -> Result<Self, VideoError> {
        let mut input = open_input(&scan.path)?;
        let stream = input
            .stream(scan.stream_index)
            .ok_or_else(|| VideoError::NotAVideo {
                path: scan.path.clone(),
                reason: "the video stream disappeared between opens".into(),
            })?;
        let mut context = codec::Context::from_parameters(stream.parameters())
            .map_err(|e| VideoError::ffmpeg(&scan.path, "setting up the video decoder", e))?;
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(MAX_DECODER_THREADS);
        let time_base = stream.time_base();
        // SAFETY: setting plain fields before the decoder is opened. The packet time base
        // lets the decoder keep timestamps exact (FFmpeg's own tools set it too).
        unsafe {
            let c = context.as_mut_ptr();
            (*c).thread_count = threads as i32;
            (*c).pkt_timebase = time_base.into();
        }
        let decoder = context
            .decoder()
            .video()
            .map_err(|e| VideoError::ffmpeg(&scan.path, "opening the video decoder", e))?;
        ignore_other_streams(&mut input, scan.stream_index);

        let mut seeked = false;
        if allow_seek && plan.range.start > 0 {
            let target = scan.start + slot_start_ticks(plan.range.start, scan.time_base, plan.fps);
            // Land on the last keyframe at or before the range's first frame.
            // SAFETY: plain call on an open input; failure leaves the position at 0.
            let ret = unsafe {
                ffi::avformat_seek_file(
                    input.as_mut_ptr(),
                    scan.stream_index as i32,
                    i64::MIN,
                    target,
                    target,
                    0,
                )
            };
            seeked = ret >= 0;
        }

        Ok(Self {
            grid: CfrGrid::new(plan.range.clone()),
            next_index: plan.range.start,
            scan,
            plan,
            input,
            decoder,
            state: State::Reading,
            seeked,
            decoded: frame::Video::empty(),
            held: frame::Video::empty(),
            held_rgb: None,
            incoming: false,
            pending: 0,
            last_slot: None,
            max_decoded_pts: None,
            skipped_packets: 0,
            consecutive_errors: 0,
            scaler: Scaler::new(),
            rgb: frame::Video::empty(),
            scratch: Vec::new(),
        })
    }

    fn advance(&mut self) -> Result<Option<Frame>, VideoError> {
        loop {
            if self.pending > 0 {
                self.pending -= 1;
                return self.emit_held().map(Some);
            }
            if self.incoming {
                std::mem::swap(&mut self.held, &mut self.decoded);
                self.held_rgb = None;
                self.incoming = false;
            }
            if self.state == State::Done || self.grid.is_complete() {
                self.state = State::Done;
                return Ok(None);
            }
            match self.decode_next()? {
                Some(slot) => {
                    if self.seeked && !self.grid.is_holding() {
                        // Some demuxers (MPEG-TS, ...) seek to the nearest timestamp, not
                        // to a keyframe: pictures before the first keyframe would be
                        // missing their references.
                        if !self.decoded.is_key() {
                            continue;
                        }
                        if slot > self.plan.range.start as i64 {
                            // The seek overshot the range start; decode from the beginning.
                            return self.restart_without_seek();
                        }
                    }
                    self.pending = self.grid.push(slot);
                    self.incoming = true;
                }
                None => {
                    if self.seeked && !self.grid.is_holding() {
                        // The seek landed past the last keyframe before the range.
                        return self.restart_without_seek();
                    }
                    self.check_complete()?;
                    self.pending = self.grid.finish();
                    self.state = State::Done;
                }
            }
        }
    }

    fn restart_without_seek(&mut self) -> Result<Option<Frame>, VideoError> {
        let fresh = Self::start(self.scan.clone(), self.plan.clone(), false)?;
        *self = fresh;
        self.advance()
    }

    /// At end of stream: every packet the scan saw must have produced its picture.
    fn check_complete(&self) -> Result<(), VideoError> {
        if !self.grid.is_holding() {
            return Err(VideoError::Truncated {
                path: self.scan.path.clone(),
                frame: Some(self.next_index),
                detail: "the decoder produced no picture".into(),
            });
        }
        let reads_to_end = self.plan.range.end == self.plan.total;
        let missing_tail = self.max_decoded_pts.is_some_and(|p| p < self.scan.last_pts);
        if reads_to_end && missing_tail {
            let tb = self.scan.time_base;
            let last = self.max_decoded_pts.unwrap_or(self.scan.start);
            let frame = (slot_of(last, self.scan.start, tb, self.plan.fps) + 1).max(0) as u64;
            return Err(VideoError::Truncated {
                path: self.scan.path.clone(),
                frame: Some(frame),
                detail: format!(
                    "pictures stop at {:.3} s but the stream has frames up to {:.3} s",
                    tb.to_secs(last - self.scan.start),
                    tb.to_secs(self.scan.last_pts - self.scan.start)
                ),
            });
        }
        Ok(())
    }

    /// Decodes the next picture into `self.decoded` and returns its output slot;
    /// `None` at the end of the stream.
    fn decode_next(&mut self) -> Result<Option<i64>, VideoError> {
        loop {
            match self.decoder.receive_frame(&mut self.decoded) {
                Ok(()) => {
                    if frame_is_discarded(&self.decoded) {
                        continue;
                    }
                    let slot = match self.decoded.timestamp() {
                        Some(ts) => {
                            self.max_decoded_pts =
                                Some(self.max_decoded_pts.map_or(ts, |m| m.max(ts)));
                            slot_of(ts, self.scan.start, self.scan.time_base, self.plan.fps)
                        }
                        // Untimed streams: pictures are consecutive.
                        None => self.last_slot.map_or(0, |s| s + 1),
                    };
                    self.last_slot = Some(slot);
                    self.consecutive_errors = 0;
                    return Ok(Some(slot));
                }
                Err(ffmpeg_next::Error::Eof) => return Ok(None),
                Err(ffmpeg_next::Error::Other { errno }) if errno == libc::EAGAIN => {
                    if self.state == State::Draining {
                        return Ok(None);
                    }
                    self.feed()?;
                }
                Err(e) => self.tolerate(e)?,
            }
        }
    }

    /// Like FFmpeg's own tools, a packet the decoder rejects is skipped (the previous
    /// picture fills its slot) and counted; a long run of them means the stream is
    /// unusable and ends reading with [`VideoError::DecodeFailed`].
    fn tolerate(&mut self, error: ffmpeg_next::Error) -> Result<(), VideoError> {
        self.skipped_packets += 1;
        self.consecutive_errors += 1;
        if self.consecutive_errors > MAX_CONSECUTIVE_DECODE_ERRORS {
            return Err(self.decode_error(error));
        }
        Ok(())
    }

    /// Sends the next packet of our stream to the decoder (or end of stream).
    fn feed(&mut self) -> Result<(), VideoError> {
        loop {
            match read_packet(&mut self.input) {
                Ok(packet) => {
                    // A packet cut short by the end of the file is flagged corrupt; the
                    // scan left it out of the frame count, so it is not decoded either.
                    if packet.stream() != self.scan.stream_index || packet.is_corrupt() {
                        continue;
                    }
                    return match self.decoder.send_packet(&packet) {
                        Ok(()) => Ok(()),
                        Err(e) => self.tolerate(e),
                    };
                }
                Err(ffmpeg_next::Error::Eof) => {
                    self.state = State::Draining;
                    return self.decoder.send_eof().map_err(|e| self.decode_error(e));
                }
                Err(e) => {
                    return Err(VideoError::Truncated {
                        path: self.scan.path.clone(),
                        frame: Some(self.next_index),
                        detail: format!("reading the file failed: {e}"),
                    })
                }
            }
        }
    }

    fn decode_error(&self, source: ffmpeg_next::Error) -> VideoError {
        VideoError::DecodeFailed {
            path: self.scan.path.clone(),
            frame: self.next_index,
            source,
        }
    }

    /// The held picture as the next output frame.
    fn emit_held(&mut self) -> Result<Frame, VideoError> {
        if self.held_rgb.is_none() {
            self.held_rgb = Some(self.convert_held()?);
        }
        let data = self.held_rgb.clone().unwrap_or_default();
        let frame = Frame {
            index: self.next_index,
            width: self.plan.info.width,
            height: self.plan.info.height,
            data,
        };
        self.next_index += 1;
        Ok(frame)
    }

    fn convert_held(&mut self) -> Result<Vec<u8>, VideoError> {
        let (w, h) = (self.scan.coded_width, self.scan.coded_height);
        let matrix = YuvMatrix::of_decoded(
            self.held.color_space(),
            self.held.color_range(),
            self.held.height(),
        );
        self.scaler
            .convert(&self.held, &mut self.rgb, Pixel::RGB24, w, h, matrix)
            .map_err(|e| VideoError::DecodeFailed {
                path: self.scan.path.clone(),
                frame: self.next_index,
                source: e,
            })?;
        let orientation: Orientation = self.scan.orientation;
        if orientation.is_upright() {
            let mut out = Vec::new();
            copy_rgb24_tight(&self.rgb, &mut out);
            Ok(out)
        } else {
            copy_rgb24_tight(&self.rgb, &mut self.scratch);
            let mut out = Vec::new();
            orientation.apply_rgb(&self.scratch, w, h, &mut out);
            Ok(out)
        }
    }
}

impl Iterator for VideoReader {
    type Item = Result<Frame, VideoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.state == State::Done && self.pending == 0 {
            return None;
        }
        match self.advance() {
            Ok(Some(frame)) => Some(Ok(frame)),
            Ok(None) => None,
            Err(e) => {
                self.state = State::Done;
                self.pending = 0;
                self.incoming = false;
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.plan.range.end - self.next_index) as usize;
        if self.state == State::Done && self.pending == 0 {
            (0, Some(0))
        } else {
            (0, Some(left))
        }
    }
}

/// Lets the demuxer skip audio, subtitles and data: only our stream is decoded.
fn ignore_other_streams(input: &mut Input, keep: usize) {
    // SAFETY: adjusting the `discard` field of the context's own streams.
    unsafe {
        let ctx = input.as_mut_ptr();
        for i in 0..(*ctx).nb_streams as usize {
            if i != keep {
                let stream = *(*ctx).streams.add(i);
                (*stream).discard = ffi::AVDiscard::AVDISCARD_ALL;
            }
        }
    }
}

fn frame_is_discarded(frame: &frame::Video) -> bool {
    // SAFETY: reading a plain field of a valid frame.
    unsafe { ((*frame.as_ptr()).flags & ffi::AV_FRAME_FLAG_DISCARD) != 0 }
}

impl std::fmt::Debug for VideoReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoReader")
            .field("path", &self.scan.path)
            .field("info", &self.plan.info)
            .field("next_index", &self.next_index)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_can_move_to_a_pipeline_thread() {
        fn is_send<T: Send>() {}
        is_send::<VideoReader>();
    }
}
