//! Decoding: frame counts, rates, rotation, codecs. Inputs are made with the ffmpeg CLI.

mod video_common;

use rotoscope::video::{probe, Rational, ReadOptions, VideoReader};
use video_common::*;

#[test]
fn sample_decodes_to_72_frames() {
    let info = probe(sample_path()).unwrap();
    assert_eq!((info.width, info.height), (512, 512));
    assert_eq!(info.fps, Rational::integer(24).unwrap());
    assert_eq!(info.frame_count, 72);
    assert!(info.has_audio);
    assert_eq!(info.codec, "h264");
    let mut reader = VideoReader::open(sample_path()).unwrap();
    let mut n = 0;
    for (i, frame) in reader.by_ref().enumerate() {
        let frame = frame.unwrap();
        assert_eq!(frame.index, i as u64);
        assert_eq!(frame.data.len(), 512 * 512 * 3);
        n += 1;
    }
    assert_eq!(n, 72);
    let _ = ReadOptions::default();
}
