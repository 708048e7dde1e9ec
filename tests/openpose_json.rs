//! Importing OpenPose JSON: keypoints as ControlNet's annotator writes them (normalised to
//! the canvas) are read back and drawn exactly like the annotator's own map.
//! Fixtures: scripts/fixtures/openpose_draw.py.

use std::path::PathBuf;

use rotoscope::preprocess::openpose::json::{parse_json, read_json_file, to_json_string};
use rotoscope::preprocess::openpose::{draw_pose_map, DrawParts};
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openpose")
}

#[test]
fn annotator_json_imports_and_draws_like_the_annotator() {
    let text = std::fs::read_to_string(fixture_dir().join("draw_cases.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let (mut total, mut identical) = (0usize, 0usize);
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let frames =
            read_json_file(&fixture_dir().join(case["json"].as_str().unwrap()), None).unwrap();
        assert_eq!(frames.len(), 1);
        let frame = &frames[0];
        let expected = image::open(fixture_dir().join(case["map"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        assert_eq!(
            (frame.width, frame.height),
            expected.dimensions(),
            "{name}: canvas size"
        );
        assert_eq!(frame.people.len(), case["people"].as_array().unwrap().len());
        let got = draw_pose_map(frame, frame.width, frame.height, DrawParts::default());
        let same = got
            .pixels()
            .zip(expected.pixels())
            .filter(|(a, b)| a == b)
            .count();
        let n = got.pixels().count();
        println!("{name}: {:.4} % identical", 100.0 * same as f64 / n as f64);
        total += n;
        identical += same;
        // Normalised coordinates pass through f32 pixels; a point sitting exactly on a
        // pixel boundary may land one pixel over.
        assert!(
            same as f64 >= 0.999 * n as f64,
            "{name}: {same}/{n} identical"
        );

        // And what we write reads back to the same keypoints.
        let back = parse_json(&to_json_string(frame), None, name).unwrap();
        assert_eq!(&back[0], frame);
    }
    println!(
        "all: {:.4} % identical",
        100.0 * identical as f64 / total as f64
    );
}
