//! Pose maps must match ControlNet's openpose annotator pixel for pixel.
//! Fixtures: scripts/fixtures/openpose_draw.py (controlnet_aux's own draw functions + cv2).

use std::path::PathBuf;

use rotoscope::preprocess::openpose::keypoints::{Body, Face, Hand, Keypoint, Person, PoseFrame};
use rotoscope::preprocess::openpose::raster::ellipse2poly;
use rotoscope::preprocess::openpose::{draw_pose_map, DrawParts};
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openpose")
}

fn load_cases() -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("draw_cases.json")).expect(
        "tests/fixtures/openpose/draw_cases.json (run scripts/make_fixtures.py openpose_draw)",
    );
    serde_json::from_str(&text).unwrap()
}

fn points<const N: usize>(v: &Value) -> Option<[Keypoint; N]> {
    let arr = v.as_array()?;
    assert_eq!(arr.len(), N);
    Some(std::array::from_fn(|i| match arr[i].as_array() {
        Some(p) => Keypoint::new(
            p[0].as_f64().unwrap() as f32,
            p[1].as_f64().unwrap() as f32,
            1.0,
        ),
        None => Keypoint::MISSING,
    }))
}

fn frame_of(case: &Value) -> PoseFrame {
    let source = case["source"].as_array().unwrap();
    let people = case["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Person {
            body: points(&p["body"]).map(|points| Body { points }),
            left_hand: points(&p["left_hand"]).map(|points| Hand { points }),
            right_hand: points(&p["right_hand"]).map(|points| Hand { points }),
            face: points(&p["face"]).map(|points| Face { points }),
        })
        .collect();
    PoseFrame {
        width: source[0].as_u64().unwrap() as u32,
        height: source[1].as_u64().unwrap() as u32,
        people,
    }
}

#[test]
fn pose_maps_match_controlnet_annotator() {
    let doc = load_cases();
    let mut total = 0usize;
    let mut identical = 0usize;
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let canvas = case["canvas"].as_array().unwrap();
        let (w, h) = (
            canvas[0].as_u64().unwrap() as u32,
            canvas[1].as_u64().unwrap() as u32,
        );
        let expected = image::open(fixture_dir().join(case["map"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        assert_eq!(expected.dimensions(), (w, h), "{name}");
        let got = draw_pose_map(&frame_of(case), w, h, DrawParts::default());
        if let Some(dir) = std::env::var_os("ROTOSCOPE_DEBUG_DIR") {
            got.save(PathBuf::from(dir).join(format!("{name}.png")))
                .unwrap();
        }

        let mut same = 0usize;
        let mut max_diff = 0u8;
        for (a, b) in got.pixels().zip(expected.pixels()) {
            if a == b {
                same += 1;
            }
            for c in 0..3 {
                max_diff = max_diff.max(a[c].abs_diff(b[c]));
            }
        }
        let n = (w * h) as usize;
        println!(
            "{name}: {same}/{n} pixels identical ({:.4} %), max channel diff {max_diff}",
            100.0 * same as f64 / n as f64
        );
        total += n;
        identical += same;
        assert_eq!(same, n, "{name}: the map differs from the annotator's");
    }
    println!(
        "all cases: {:.4} % identical (opencv {})",
        100.0 * identical as f64 / total as f64,
        doc["opencv"]
    );
}

#[test]
fn ellipse2poly_matches_opencv() {
    let doc = load_cases();
    for case in doc["ellipse2poly"].as_array().unwrap() {
        let c = case["center"].as_array().unwrap();
        let a = case["axes"].as_array().unwrap();
        let i = |v: &Value| v.as_i64().unwrap() as i32;
        let got = ellipse2poly(
            (i(&c[0]), i(&c[1])),
            (i(&a[0]), i(&a[1])),
            i(&case["angle"]),
            0,
            360,
            1,
        );
        let expected: Vec<(i32, i32)> = case["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (i(&p[0]), i(&p[1])))
            .collect();
        assert_eq!(got, expected, "{case}");
    }
}
