//! Probing a video: stream facts plus a packet scan that makes the frame count exact.
//!
//! Containers' own frame counts and durations are often missing (MKV, WebM) or wrong
//! (VFR phone clips, damaged files), and batch planning needs the exact number of frames
//! before decoding starts. So every open reads all packets once (demuxing only, no
//! decoding — a few ms per minute of video, no memory kept per packet) and derives the
//! constant-rate frame count from the first frame's start and the last frame's end.

use std::ops::Range;
use std::path::{Path, PathBuf};

use ffmpeg_next::codec::packet::side_data::Type as SideDataType;
use ffmpeg_next::format::context::Input;
use ffmpeg_next::media;

use super::error::VideoError;
use super::input::{
    absolute, codec_name, describe_streams, open_input, packet_is_discarded, pick_video_stream,
    read_packet,
};
use super::orientation::Orientation;
use super::rational::choose_output_fps;
use super::timing::{cfr_frame_count, TimeBase};
use crate::preset::rational::Rational;

/// How to read: output rate, part of the clip, what to do with damaged files.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReadOptions {
    /// Output frame rate; default: the stream's average rate (see [`choose_output_fps`]).
    ///
    /// [`choose_output_fps`]: super::rational::choose_output_fps
    pub fps: Option<Rational>,
    /// Only frames `A..B` of the clip's grid (at the output rate). Frames keep their
    /// index on the whole clip's grid.
    pub frames: Option<Range<u64>>,
    /// Read a truncated file up to the damage instead of refusing it. The frame count
    /// then covers the frames that are present.
    pub allow_truncated: bool,
}

/// What a [`VideoReader`](super::VideoReader) will deliver.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoInfo {
    /// Size of the frames yielded: upright (rotation applied), in stored pixels.
    pub width: u32,
    pub height: u32,
    /// Constant output frame rate (the stream's average rate unless overridden).
    pub fps: Rational,
    /// Exact number of frames the reader yields (for a frame range: its length).
    pub frame_count: u64,
    /// `frame_count / fps`: the duration of what the reader yields, in seconds.
    pub duration_secs: f64,
    /// Index of the first yielded frame on the clip's frame grid (0 unless a range is set).
    pub start_frame: u64,
    /// Whether the file has an audio stream (which an encoder can copy).
    pub has_audio: bool,
    /// Clockwise rotation (0, 90, 180, 270) the file asks for; already applied to frames.
    pub rotation_degrees: i32,
    /// Video codec name as FFmpeg calls it ("h264", "hevc", "vp9", "prores", ...).
    pub codec: String,
}

/// Timing facts of the chosen video stream, gathered by [`scan`].
#[derive(Clone, Debug)]
pub(crate) struct StreamScan {
    pub path: PathBuf,
    pub stream_index: usize,
    pub time_base: TimeBase,
    /// First presentation timestamp (the grid origin).
    pub start: i64,
    /// End of the last frame.
    pub end: i64,
    /// Start of the last frame: decoding must reach it.
    pub last_pts: i64,
    pub packets: u64,
    pub coded_width: u32,
    pub coded_height: u32,
    pub orientation: Orientation,
    pub codec: String,
    pub has_audio: bool,
    pub default_fps: Rational,
    /// Set when the file ends before what its headers declare.
    pub damage: Option<Damage>,
}

#[derive(Clone, Debug)]
pub(crate) struct Damage {
    pub detail: String,
}

/// Everything about `path` a reader with default options would report.
pub fn probe(path: impl AsRef<Path>) -> Result<VideoInfo, VideoError> {
    probe_with(path, &ReadOptions::default())
}

/// Like [`probe`], with a frame rate override, frame range or truncation policy.
pub fn probe_with(path: impl AsRef<Path>, options: &ReadOptions) -> Result<VideoInfo, VideoError> {
    let scan = scan(path.as_ref())?;
    Ok(plan(&scan, options)?.info)
}

/// The output grid a reader follows.
#[derive(Clone, Debug)]
pub(crate) struct ReadPlan {
    pub info: VideoInfo,
    pub fps: Rational,
    pub range: Range<u64>,
    /// Frames in the whole clip at `fps`.
    pub total: u64,
}

/// Applies `options` to a scan: output rate, frame count, range checks, damage policy.
pub(crate) fn plan(scan: &StreamScan, options: &ReadOptions) -> Result<ReadPlan, VideoError> {
    let fps = options.fps.unwrap_or(scan.default_fps);
    let mut total = cfr_frame_count(scan.start, scan.end, scan.time_base, fps);
    if total == 0 && scan.packets > 0 {
        // A single picture shorter than one output frame still makes one frame.
        total = 1;
    }
    if let Some(damage) = &scan.damage {
        if !options.allow_truncated {
            return Err(VideoError::Truncated {
                path: scan.path.clone(),
                frame: Some(total),
                detail: format!(
                    "{} (read with allow_truncated to use the first {total} frames)",
                    damage.detail
                ),
            });
        }
    }
    if total == 0 {
        return Err(VideoError::ZeroFrames {
            path: scan.path.clone(),
        });
    }
    let range = match &options.frames {
        None => 0..total,
        Some(r) if r.start < r.end && r.end <= total => r.clone(),
        Some(r) => {
            return Err(VideoError::InvalidRange {
                path: scan.path.clone(),
                range: r.clone(),
                frame_count: total,
            })
        }
    };
    let (width, height) = scan
        .orientation
        .display_size(scan.coded_width, scan.coded_height);
    let frame_count = range.end - range.start;
    let info = VideoInfo {
        width,
        height,
        fps,
        frame_count,
        duration_secs: frame_count as f64 * fps.frame_duration_secs(),
        start_frame: range.start,
        has_audio: scan.has_audio,
        rotation_degrees: scan.orientation.rotation_degrees(),
        codec: scan.codec.clone(),
    };
    Ok(ReadPlan {
        info,
        fps,
        range,
        total,
    })
}

/// Opens `path`, picks its video stream and reads every packet once.
pub(crate) fn scan(path: &Path) -> Result<StreamScan, VideoError> {
    let path = absolute(path);
    let mut input = open_input(&path)?;
    let Some(stream_index) = pick_video_stream(&input) else {
        return Err(VideoError::NoVideoStream {
            streams: describe_streams(&input),
            path,
        });
    };
    let stream = input
        .stream(stream_index)
        .expect("pick_video_stream returns an existing index");
    let codec = codec_name(&stream);
    if ffmpeg_next::decoder::find(stream.parameters().id()).is_none() {
        return Err(VideoError::UnsupportedCodec { path, codec });
    }
    let tb = stream.time_base();
    let time_base =
        TimeBase::new(tb.numerator() as i64, tb.denominator() as i64).ok_or_else(|| {
            VideoError::NotAVideo {
                path: path.clone(),
                reason: format!("the video stream has an invalid time base {tb}"),
            }
        })?;
    // SAFETY: reading plain fields of valid codec parameters.
    let (coded_width, coded_height) = unsafe {
        let p = stream.parameters();
        (
            (*p.as_ptr()).width.max(0) as u32,
            (*p.as_ptr()).height.max(0) as u32,
        )
    };
    if coded_width == 0 || coded_height == 0 {
        return Err(VideoError::NotAVideo {
            path,
            reason: "the video stream has no picture size".into(),
        });
    }
    let orientation = stream_orientation(&stream);
    let avg = Rational::from_signed(
        stream.avg_frame_rate().numerator() as i64,
        stream.avg_frame_rate().denominator() as i64,
    );
    let base = Rational::from_signed(
        stream.rate().numerator() as i64,
        stream.rate().denominator() as i64,
    );
    let declared_frames = stream.frames();
    // SAFETY: reading a plain field of an open format context.
    let guessed = unsafe {
        (*input.as_ptr()).duration_estimation_method
            == ffmpeg_next::ffi::AVDurationEstimationMethod::AVFMT_DURATION_FROM_BITRATE
    };
    let declared_stream_end = (stream.duration() > 0 && !guessed).then(|| {
        let start = if stream.start_time() == ffmpeg_next::ffi::AV_NOPTS_VALUE {
            0
        } else {
            stream.start_time()
        };
        time_base.to_secs(start + stream.duration())
    });
    let has_audio = input
        .streams()
        .any(|s| s.parameters().medium() == media::Type::Audio);

    let counts = count_packets(&mut input, stream_index);
    let (format_start, format_duration) = format_extent(&input);

    let fallback_fps = choose_output_fps(avg, base, None);
    let Some(timing) = counts.timing(time_base, fallback_fps) else {
        return Err(VideoError::ZeroFrames { path });
    };
    let span_secs = time_base.to_secs(timing.end - timing.start);
    let measured =
        (counts.packets > 1 && span_secs > 0.0).then(|| counts.packets as f64 / span_secs);
    let default_fps = choose_output_fps(avg, base, measured);

    // Damage: the data stops before what the headers promise.
    let frame_secs = default_fps.frame_duration_secs();
    let tolerance = (2.0 * frame_secs).max(0.25);
    let video_end_secs = time_base.to_secs(timing.end);
    let mut damage = counts.read_error.as_ref().map(|e| {
        format!(
            "reading stopped at {:.2} s: {e}",
            video_end_secs - time_base.to_secs(timing.start)
        )
    });
    if damage.is_none() && declared_frames > 0 && counts.all_packets < declared_frames as u64 {
        damage = Some(format!(
            "the index lists {declared_frames} video frames but only {} are present",
            counts.all_packets
        ));
    }
    if damage.is_none() {
        if let Some(declared_end) = declared_stream_end {
            if video_end_secs < declared_end - tolerance {
                damage = Some(format!(
                    "video data ends at {video_end_secs:.2} s but the stream declares {declared_end:.2} s"
                ));
            }
        }
    }
    if damage.is_none() {
        if let (Some(start), Some(duration)) = (format_start, format_duration) {
            let declared_end = start + duration;
            let saw_timestamps = counts.any_stream_end_secs > f64::MIN;
            if saw_timestamps && counts.any_stream_end_secs < declared_end - tolerance {
                damage = Some(format!(
                    "data ends at {:.2} s but the file declares {declared_end:.2} s",
                    counts.any_stream_end_secs
                ));
            }
        }
    }
    let damage = damage.map(|detail| Damage { detail });

    Ok(StreamScan {
        path,
        stream_index,
        time_base,
        start: timing.start,
        end: timing.end,
        last_pts: timing.last_pts,
        packets: counts.packets,
        coded_width,
        coded_height,
        orientation,
        codec,
        has_audio,
        default_fps,
        damage,
    })
}

/// The display matrix side data, else a legacy `rotate` tag, else upright.
fn stream_orientation(stream: &ffmpeg_next::format::stream::Stream) -> Orientation {
    for side in stream.side_data() {
        if side.kind() == SideDataType::DisplayMatrix {
            if let Some(o) = Orientation::from_display_matrix_bytes(side.data()) {
                return o;
            }
        }
    }
    stream
        .metadata()
        .get("rotate")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|deg| Orientation::from_clockwise_degrees(deg.round() as i64))
        .unwrap_or_default()
}

/// Start and duration the container declares (seconds). The duration is `None` when
/// unknown or only guessed from the bit rate (raw streams), which proves nothing.
fn format_extent(input: &Input) -> (Option<f64>, Option<f64>) {
    // SAFETY: reading plain fields of an open format context.
    let (start, duration, method) = unsafe {
        let ctx = input.as_ptr();
        (
            (*ctx).start_time,
            (*ctx).duration,
            (*ctx).duration_estimation_method,
        )
    };
    if method == ffmpeg_next::ffi::AVDurationEstimationMethod::AVFMT_DURATION_FROM_BITRATE {
        return (None, None);
    }
    let us = ffmpeg_next::ffi::AV_TIME_BASE as f64;
    let nopts = ffmpeg_next::ffi::AV_NOPTS_VALUE;
    let start = if start == nopts {
        0.0
    } else {
        start as f64 / us
    };
    let duration = (duration != nopts && duration > 0).then(|| duration as f64 / us);
    (Some(start), duration)
}

/// Running totals of the packet scan; nothing is kept per packet.
#[derive(Default)]
struct PacketCounts {
    /// Video packets that produce frames (not discarded by an edit list, not corrupt).
    packets: u64,
    /// All video packets, for comparison with the container's index.
    all_packets: u64,
    min_pts: Option<i64>,
    /// Largest and second largest distinct timestamps, and the largest's duration.
    max_pts: Option<i64>,
    second_pts: Option<i64>,
    max_pts_duration: i64,
    /// Largest `pts + duration` among packets that carry a duration.
    max_end: Option<i64>,
    any_stream_end_secs: f64,
    read_error: Option<ffmpeg_next::Error>,
}

struct Timing {
    start: i64,
    end: i64,
    last_pts: i64,
}

fn count_packets(input: &mut Input, stream_index: usize) -> PacketCounts {
    let mut counts = PacketCounts {
        any_stream_end_secs: f64::MIN,
        ..Default::default()
    };
    let stream_bases: Vec<TimeBase> = input
        .streams()
        .map(|s| {
            TimeBase::new(
                s.time_base().numerator() as i64,
                s.time_base().denominator() as i64,
            )
            .unwrap_or(TimeBase { num: 1, den: 1 })
        })
        .collect();
    loop {
        let packet = match read_packet(input) {
            Ok(packet) => packet,
            Err(ffmpeg_next::Error::Eof) => break,
            Err(e) => {
                counts.read_error = Some(e);
                break;
            }
        };
        let index = packet.stream();
        let ts = packet.pts().or(packet.dts());
        if let (Some(ts), Some(tb)) = (ts, stream_bases.get(index)) {
            let end = tb.to_secs(ts + packet.duration().max(0));
            counts.any_stream_end_secs = counts.any_stream_end_secs.max(end);
        }
        if index != stream_index {
            continue;
        }
        counts.all_packets += 1;
        if packet_is_discarded(&packet) || packet.is_corrupt() {
            continue;
        }
        counts.add(ts, packet.duration());
    }
    counts
}

impl PacketCounts {
    /// Adds one frame-producing video packet.
    fn add(&mut self, ts: Option<i64>, duration: i64) {
        self.packets += 1;
        // Raw elementary streams carry neither pts nor dts; see `timing`.
        let Some(ts) = ts else {
            return;
        };
        let duration = duration.max(0);
        self.min_pts = Some(self.min_pts.map_or(ts, |m| m.min(ts)));
        match self.max_pts {
            Some(m) if ts > m => {
                self.second_pts = Some(m);
                self.max_pts = Some(ts);
                self.max_pts_duration = duration;
            }
            Some(m) if ts == m => self.max_pts_duration = self.max_pts_duration.max(duration),
            Some(_) => {
                if self.second_pts.is_none_or(|s| ts > s) {
                    self.second_pts = Some(ts);
                }
            }
            None => {
                self.max_pts = Some(ts);
                self.max_pts_duration = duration;
            }
        }
        if duration > 0 {
            let end = ts + duration;
            self.max_end = Some(self.max_end.map_or(end, |m| m.max(end)));
        }
    }

    /// First frame start and last frame end. A last frame without a duration lasts as
    /// long as the gap before it (or one frame at `fallback_fps`).
    fn timing(&self, time_base: TimeBase, fallback_fps: Rational) -> Option<Timing> {
        if self.packets == 0 {
            return None;
        }
        let one_frame = super::timing::slot_start_ticks(1, time_base, fallback_fps).max(1);
        let (Some(start), Some(last)) = (self.min_pts, self.max_pts) else {
            // No timestamps at all: frames are consecutive at the fallback rate.
            let end = one_frame.saturating_mul(self.packets as i64);
            return Some(Timing {
                start: 0,
                end,
                last_pts: end - one_frame,
            });
        };
        let last_duration = if self.max_pts_duration > 0 {
            self.max_pts_duration
        } else if let Some(second) = self.second_pts {
            last - second
        } else {
            one_frame
        };
        let end = (last + last_duration).max(self.max_end.unwrap_or(i64::MIN));
        Some(Timing {
            start,
            end,
            last_pts: last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pts_and_durations: &[(i64, i64)]) -> PacketCounts {
        let mut c = PacketCounts::default();
        for &(ts, duration) in pts_and_durations {
            c.add(Some(ts), duration);
        }
        c
    }

    #[test]
    fn timing_uses_the_last_frames_duration() {
        let tb = TimeBase::new(1, 1000).unwrap();
        let fps = Rational::integer(25).unwrap();
        // Decode order with B-frames: presentation order is 0, 40, 80, 120.
        let t = counts(&[(0, 40), (120, 40), (40, 40), (80, 40)])
            .timing(tb, fps)
            .unwrap();
        assert_eq!((t.start, t.end, t.last_pts), (0, 160, 120));
    }

    #[test]
    fn missing_last_duration_repeats_the_previous_gap() {
        let tb = TimeBase::new(1, 1000).unwrap();
        let fps = Rational::integer(25).unwrap();
        let t = counts(&[(0, 0), (33, 0), (100, 0)])
            .timing(tb, fps)
            .unwrap();
        assert_eq!((t.start, t.end), (0, 167));
        let single = counts(&[(500, 0)]).timing(tb, fps).unwrap();
        assert_eq!((single.start, single.end), (500, 540));
    }

    #[test]
    fn untimed_streams_count_frames() {
        let tb = TimeBase::new(1, 1_200_000).unwrap();
        let fps = Rational::integer(25).unwrap();
        let mut c = PacketCounts::default();
        for _ in 0..10 {
            c.add(None, 0);
        }
        let t = c.timing(tb, fps).unwrap();
        assert_eq!(cfr_frame_count(t.start, t.end, tb, fps), 10);
        assert!(PacketCounts::default().timing(tb, fps).is_none());
    }
}
