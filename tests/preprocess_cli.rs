//! `rotoscope preprocess`: per-frame pose maps + OpenPose JSON + soft-edge maps, cached so a
//! rerun skips the work. Runs the real binary on a short clip cut from the bundled sample.

#[path = "cli_common/mod.rs"]
mod common;
mod models_common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{assert_ok, media, parse_json_lines};
use models_common::preprocessor_models_dir;
use rotoscope::preprocess::openpose::json::read_json_file;
use serde_json::Value;

/// The first `frames` frames of the bundled sample, scaled to 256² (keeps HED quick).
fn short_clip(dir: &Path, name: &str, frames: u32) -> PathBuf {
    let out = dir.join(name);
    media::ffmpeg(&[
        "-i",
        media::sample_path().to_str().unwrap(),
        "-frames:v",
        &frames.to_string(),
        "-vf",
        "scale=256:256",
        "-an",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        out.to_str().unwrap(),
    ]);
    out
}

fn done_event(stdout: &str) -> Value {
    let lines = parse_json_lines(stdout);
    assert_eq!(lines[0]["event"], "start", "{stdout}");
    let last = lines.last().unwrap().clone();
    assert_eq!(last["event"], "done", "{stdout}");
    last
}

/// Runs `rotoscope ARGS` with `ROTOSCOPE_MODELS=models`.
fn rotoscope_env(args: &[&str], models: &Path) -> Output {
    common::rotoscope_env(args, &[("ROTOSCOPE_MODELS", models)])
}

fn run(args: &[&str], models: &Path) -> String {
    assert_ok(&rotoscope_env(args, models))
}

#[test]
fn preprocess_writes_maps_and_json_and_reruns_from_cache() {
    let models = preprocessor_models_dir();
    let tmp = tempfile::tempdir().unwrap();
    let clip = short_clip(tmp.path(), "clip.mp4", 5);
    let out = tmp.path().join("maps");
    let (clip_s, out_s) = (clip.to_str().unwrap(), out.to_str().unwrap());

    // Pose only.
    let stdout = run(
        &["preprocess", clip_s, "-o", out_s, "--pose", "--json"],
        &models,
    );
    let done = done_event(&stdout);
    assert_eq!(done["frames"], 5);
    assert_eq!(done["computed"], 5);
    assert_eq!(done["cached"], 0);
    // Tracking: the person detector ran on the first frame only.
    assert_eq!(done["pose_person_detections"], 1, "{done}");
    let progress: Vec<Value> = parse_json_lines(&stdout)
        .into_iter()
        .filter(|l| l["event"] == "progress")
        .collect();
    assert!(!progress.is_empty());
    assert_eq!(progress.last().unwrap()["frame"], 5);
    assert_eq!(progress.last().unwrap()["stage"], "preprocess");

    for i in 0..5 {
        let map = image::open(out.join(format!("pose_{i:06}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(map.dimensions(), (256, 256));
        assert!(
            map.pixels().filter(|p| p.0 != [0, 0, 0]).count() > 500,
            "frame {i} map empty"
        );
        let frames =
            read_json_file(&out.join(format!("pose_{i:06}_keypoints.json")), None).unwrap();
        let person = &frames[0].people[0];
        let nose = person.body.unwrap().points[0];
        // The sample's face is in the upper middle of the frame.
        assert!(
            nose.is_present() && (80.0..180.0).contains(&nose.x) && nose.y < 128.0,
            "{nose:?}"
        );
        assert!(person.face.is_some());
        assert!(!out.join(format!("softedge_{i:06}.png")).exists());
    }
    let modified = std::fs::metadata(out.join("pose_000002.png"))
        .unwrap()
        .modified()
        .unwrap();

    // Same input and settings: nothing to do.
    let done = done_event(&run(
        &["preprocess", clip_s, "-o", out_s, "--pose", "--json"],
        &models,
    ));
    assert_eq!(
        (done["computed"].clone(), done["cached"].clone()),
        (0.into(), 5.into())
    );
    let again = std::fs::metadata(out.join("pose_000002.png"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(modified, again, "cached map rewritten");

    // A different input in the same directory invalidates the cache.
    let other = short_clip(tmp.path(), "other.mp4", 3);
    let done = done_event(&run(
        &[
            "preprocess",
            other.to_str().unwrap(),
            "-o",
            out_s,
            "--pose",
            "--json",
        ],
        &models,
    ));
    assert_eq!(
        (done["computed"].clone(), done["cached"].clone()),
        (3.into(), 0.into())
    );
    assert!(
        !out.join("pose_000004.png").exists(),
        "stale frames of the old input removed"
    );
}

#[test]
fn soft_edges_are_added_next_to_cached_poses() {
    // HED runs at controlnet_aux's 512-px detect resolution: one frame keeps this quick.
    let models = preprocessor_models_dir();
    let tmp = tempfile::tempdir().unwrap();
    let clip = short_clip(tmp.path(), "clip.mp4", 1);
    let out = tmp.path().join("maps");
    let (clip_s, out_s) = (clip.to_str().unwrap(), out.to_str().unwrap());
    run(
        &["preprocess", clip_s, "-o", out_s, "--pose", "--json"],
        &models,
    );
    let pose_map = out.join("pose_000000.png");
    let modified = std::fs::metadata(&pose_map).unwrap().modified().unwrap();

    // No stage flag: both; pose comes from the cache.
    let done = done_event(&run(
        &["preprocess", clip_s, "-o", out_s, "--json"],
        &models,
    ));
    assert_eq!(done["computed"], 1);
    assert_eq!(
        done["pose_person_detections"], 0,
        "pose came from the cache: {done}"
    );
    assert_eq!(
        std::fs::metadata(&pose_map).unwrap().modified().unwrap(),
        modified
    );
    let edges = image::open(out.join("softedge_000000.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(edges.dimensions(), (256, 256));
    assert!(edges.pixels().any(|p| p.0[0] > 128), "no edges");
    assert!(
        edges.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]),
        "grey map"
    );

    // A different pose input invalidates only the pose frames.
    let other = short_clip(tmp.path(), "other.mp4", 2);
    let done = done_event(&run(
        &[
            "preprocess",
            other.to_str().unwrap(),
            "-o",
            out_s,
            "--pose",
            "--json",
        ],
        &models,
    ));
    assert_eq!(done["computed"], 2);
    assert!(
        out.join("softedge_000000.png").exists(),
        "other stages untouched"
    );
}

#[test]
fn missing_models_and_inputs_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = short_clip(tmp.path(), "clip.mp4", 2);
    let out = rotoscope_env(
        &[
            "preprocess",
            clip.to_str().unwrap(),
            "-o",
            tmp.path().join("o").to_str().unwrap(),
            "--pose",
        ],
        tmp.path(),
    );
    common::assert_error(
        &out,
        1,
        &[
            "pose_detection.tflite",
            "pose_landmark_full.tflite",
            "face_landmark.tflite",
            "scripts/fetch-models.sh",
        ],
    );

    let out = common::rotoscope([
        "preprocess",
        tmp.path().join("nope.mp4").to_str().unwrap(),
        "-o",
        tmp.path().join("o").to_str().unwrap(),
    ]);
    common::assert_error(&out, 2, &["nope.mp4"]);
}
