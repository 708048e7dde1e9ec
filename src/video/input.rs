//! Opening media files with libavformat, and telling the user precisely why one can't be.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::Once;

use ffmpeg_next::ffi;
use ffmpeg_next::format::context::Input;
use ffmpeg_next::format::stream::Disposition;
use ffmpeg_next::format::stream::Stream;
use ffmpeg_next::media;

use super::error::VideoError;

/// Environment variable that sets FFmpeg's own log level (quiet, error, warning, info,
/// verbose, debug). Default: error.
pub const FFMPEG_LOG_ENV: &str = "ROTOSCOPE_FFMPEG_LOG";

/// One-time library setup: device registration and a quiet log.
pub(crate) fn init_ffmpeg() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // Registration only fails on builds without the device library; decoding and
        // encoding files work regardless, so the result is deliberately ignored.
        let _ = ffmpeg_next::init();
        use ffmpeg_next::util::log::{set_level, Level};
        let level = match std::env::var(FFMPEG_LOG_ENV).as_deref() {
            Ok("quiet") => Level::Quiet,
            Ok("warning") => Level::Warning,
            Ok("info") => Level::Info,
            Ok("verbose") => Level::Verbose,
            Ok("debug") => Level::Debug,
            _ => Level::Error,
        };
        set_level(level);
    });
}

/// The path as a `file:` URL, so names with a colon are never taken for a protocol.
pub(crate) fn file_url(path: &Path) -> Result<CString, VideoError> {
    let mut bytes = b"file:".to_vec();
    bytes.extend_from_slice(path.as_os_str().as_bytes());
    CString::new(bytes).map_err(|_| VideoError::InvalidSettings {
        path: path.to_path_buf(),
        reason: "path contains a NUL byte".into(),
    })
}

/// Opens `path` for demuxing and reads the stream headers.
pub(crate) fn open_input(path: &Path) -> Result<Input, VideoError> {
    init_ffmpeg();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => VideoError::NotFound {
            path: path.to_path_buf(),
        },
        _ => VideoError::io(path, "cannot read file", e),
    })?;
    if meta.is_dir() {
        return Err(VideoError::NotAVideo {
            path: path.to_path_buf(),
            reason: "it is a directory".into(),
        });
    }
    if meta.len() == 0 {
        return Err(VideoError::NotAVideo {
            path: path.to_path_buf(),
            reason: "the file is empty".into(),
        });
    }
    // Fail with the OS's reason (e.g. permission denied) before FFmpeg hides it.
    File::open(path).map_err(|e| VideoError::io(path, "cannot read file", e))?;

    let url = file_url(path)?;
    let mut ctx: *mut ffi::AVFormatContext = ptr::null_mut();
    // SAFETY: standard open/find_stream_info sequence; on failure the context is closed
    // (avformat_open_input frees it itself), on success ownership moves into `Input`.
    unsafe {
        let ret = ffi::avformat_open_input(&mut ctx, url.as_ptr(), ptr::null(), ptr::null_mut());
        if ret < 0 {
            return Err(open_failure(path, ffmpeg_next::Error::from(ret)));
        }
        let ret = ffi::avformat_find_stream_info(ctx, ptr::null_mut());
        if ret < 0 {
            ffi::avformat_close_input(&mut ctx);
            return Err(open_failure(path, ffmpeg_next::Error::from(ret)));
        }
        Ok(Input::wrap(ctx))
    }
}

fn open_failure(path: &Path, error: ffmpeg_next::Error) -> VideoError {
    if let Some(detail) = diagnose_isobmff_file(path) {
        return VideoError::Truncated {
            path: path.to_path_buf(),
            frame: None,
            detail,
        };
    }
    match error {
        ffmpeg_next::Error::InvalidData | ffmpeg_next::Error::DemuxerNotFound => {
            VideoError::NotAVideo {
                path: path.to_path_buf(),
                reason: format!("FFmpeg cannot read it: {error}"),
            }
        }
        other => VideoError::ffmpeg(path, "opening the file", other),
    }
}

fn diagnose_isobmff_file(path: &Path) -> Option<String> {
    let mut file = File::open(path).ok()?;
    diagnose_isobmff(&mut file)
}

/// For an MP4/MOV file (starts with an `ftyp` box) whose top-level boxes don't add up,
/// says what is missing; `None` for files that are not ISO-BMFF or look complete.
/// An unfinished recording or a cut download typically lacks the `moov` index or has an
/// `mdat` that runs past the end of the file.
pub fn diagnose_isobmff<R: Read + Seek>(reader: &mut R) -> Option<String> {
    let file_len = reader.seek(SeekFrom::End(0)).ok()?;
    reader.seek(SeekFrom::Start(0)).ok()?;
    let mut offset = 0u64;
    let mut seen_moov = false;
    let mut first = true;
    while offset + 8 <= file_len {
        reader.seek(SeekFrom::Start(offset)).ok()?;
        let mut header = [0u8; 8];
        reader.read_exact(&mut header).ok()?;
        let size32 = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as u64;
        let kind = [header[4], header[5], header[6], header[7]];
        if first && &kind != b"ftyp" {
            return None;
        }
        first = false;
        let size = match size32 {
            0 => file_len - offset,
            1 => {
                let mut large = [0u8; 8];
                reader.read_exact(&mut large).ok()?;
                u64::from_be_bytes(large)
            }
            s => s,
        };
        if size < 8 {
            return Some(format!(
                "box at byte {offset} has an invalid size {size}; the file is damaged"
            ));
        }
        if &kind == b"moov" {
            seen_moov = true;
        }
        let end = offset.saturating_add(size);
        if end > file_len {
            let name = String::from_utf8_lossy(&kind).into_owned();
            return Some(if seen_moov {
                format!(
                    "the '{name}' box needs {size} bytes from byte {offset} but the file ends \
                     after {file_len} bytes"
                )
            } else {
                format!(
                    "the '{name}' box needs {size} bytes from byte {offset} but the file ends \
                     after {file_len} bytes, and there is no 'moov' index (the recording was \
                     not finished or the file was cut)"
                )
            });
        }
        offset = end;
    }
    if first {
        return None;
    }
    (!seen_moov).then(|| {
        "there is no 'moov' index (the recording was not finished or the file was cut)".into()
    })
}

/// The stream a reader should decode: the main video stream, never cover art.
/// Prefers the default-flagged stream, then the largest picture.
pub(crate) fn pick_video_stream(input: &Input) -> Option<usize> {
    input
        .streams()
        .filter(|s| s.parameters().medium() == media::Type::Video)
        .filter(|s| !s.disposition().contains(Disposition::ATTACHED_PIC))
        .max_by_key(|s| {
            let p = s.parameters();
            // SAFETY: reading plain fields of valid codec parameters.
            let area = unsafe { (*p.as_ptr()).width as i64 * (*p.as_ptr()).height as i64 };
            (
                s.disposition().contains(Disposition::DEFAULT),
                area,
                -(s.index() as i64),
            )
        })
        .map(|s| s.index())
}

/// The main audio stream (FFmpeg's own choice among audio streams).
pub(crate) fn pick_audio_stream(input: &Input) -> Option<usize> {
    input.streams().best(media::Type::Audio).map(|s| s.index())
}

/// "video h264, audio aac" — for messages about files without the expected streams.
pub(crate) fn describe_streams(input: &Input) -> String {
    let parts: Vec<String> = input
        .streams()
        .map(|s| format!("{:?} {}", s.parameters().medium(), codec_name(&s)).to_lowercase())
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

pub(crate) fn codec_name(stream: &Stream) -> String {
    stream.parameters().id().name().to_string()
}

/// The next packet of `input`, in a fresh `Packet`. (Reusing one with ffmpeg-next's
/// `Packet::read` leaks the previous packet's data: `av_read_frame` overwrites it without
/// releasing it.)
pub(crate) fn read_packet(input: &mut Input) -> Result<ffmpeg_next::Packet, ffmpeg_next::Error> {
    let mut packet = ffmpeg_next::Packet::empty();
    packet.read(input)?;
    Ok(packet)
}

/// Reads the raw `flags` of a packet (ffmpeg-next does not expose DISCARD).
pub(crate) fn packet_is_discarded(packet: &ffmpeg_next::Packet) -> bool {
    use ffmpeg_next::packet::Ref;
    // SAFETY: reading a plain field of a valid packet.
    unsafe { ((*packet.as_ptr()).flags & ffi::AV_PKT_FLAG_DISCARD) != 0 }
}

/// `path` made absolute for messages and sibling paths, without touching the file system.
pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn boxed(kind: &[u8; 4], payload_len: usize) -> Vec<u8> {
        let mut v = ((payload_len + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend(std::iter::repeat_n(0u8, payload_len));
        v
    }

    #[test]
    fn complete_mp4_layout_is_fine() {
        let mut file = boxed(b"ftyp", 16);
        file.extend(boxed(b"moov", 100));
        file.extend(boxed(b"mdat", 1000));
        assert_eq!(diagnose_isobmff(&mut Cursor::new(file)), None);
    }

    #[test]
    fn cut_mdat_without_moov_is_reported() {
        let mut file = boxed(b"ftyp", 16);
        file.extend(boxed(b"mdat", 1000));
        file.truncate(500);
        let detail = diagnose_isobmff(&mut Cursor::new(file)).unwrap();
        assert!(
            detail.contains("'mdat'") && detail.contains("no 'moov'"),
            "{detail}"
        );
    }

    #[test]
    fn cut_mdat_after_moov_is_reported() {
        let mut file = boxed(b"ftyp", 16);
        file.extend(boxed(b"moov", 100));
        file.extend(boxed(b"mdat", 1000));
        file.truncate(600);
        let detail = diagnose_isobmff(&mut Cursor::new(file)).unwrap();
        assert!(
            detail.contains("'mdat'") && !detail.contains("no 'moov'"),
            "{detail}"
        );
    }

    #[test]
    fn missing_moov_is_reported() {
        let mut file = boxed(b"ftyp", 16);
        file.extend(boxed(b"mdat", 100));
        let detail = diagnose_isobmff(&mut Cursor::new(file)).unwrap();
        assert!(detail.contains("no 'moov'"), "{detail}");
    }

    #[test]
    fn other_files_are_not_judged() {
        assert_eq!(
            diagnose_isobmff(&mut Cursor::new(b"hello world, not a video".to_vec())),
            None
        );
        assert_eq!(diagnose_isobmff(&mut Cursor::new(Vec::new())), None);
        let mut mkv = vec![0x1a, 0x45, 0xdf, 0xa3];
        mkv.extend([0u8; 60]);
        assert_eq!(diagnose_isobmff(&mut Cursor::new(mkv)), None);
    }

    #[test]
    fn file_urls_are_prefixed() {
        assert_eq!(
            file_url(Path::new("a:b.mp4")).unwrap().to_str().unwrap(),
            "file:a:b.mp4"
        );
    }
}
