//! Inference time of the six MediaPipe models at their native input sizes (median of
//! several runs after a warm-up), and the per-frame cost of the tracking path (pose
//! landmarks + two hands + face mesh; detectors only run when tracking is lost).
//!
//! Ignored by default (timings need an optimised build and a quiet machine):
//!   cargo test --release --test tflite_bench -- --ignored --nocapture
//! DESIGN §6: preprocessing ≥ 10 frames/s with tracking, so the tracking path must stay
//! well under 100 ms per frame on 2 cores.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use rotoscope::preprocess::tflite::TfliteModel;

const MODELS: [&str; 6] = [
    "pose_detection",
    "pose_landmark_full",
    "palm_detection_full",
    "hand_landmark_full",
    "face_detection_short_range",
    "face_landmark",
];

fn model_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("ROTOSCOPE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
    let path = dir.join("mediapipe").join(format!("{name}.tflite"));
    assert!(
        path.is_file(),
        "missing {} — run scripts/fetch-models.sh",
        path.display()
    );
    path
}

fn median_run(model: &TfliteModel, runs: usize) -> Duration {
    let input = Tensor::rand(0f32, 1f32, model.inputs()[0].shape.clone(), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    model.run(std::slice::from_ref(&input)).unwrap();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            model.run(std::slice::from_ref(&input)).unwrap();
            start.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "    min {:?} median {:?} max {:?}",
        times[0],
        times[runs / 2],
        times[runs - 1]
    );
    times[runs / 2]
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn median_inference_times() {
    let mut medians = std::collections::HashMap::new();
    for name in MODELS {
        let model = TfliteModel::load(model_path(name)).unwrap();
        let median = median_run(&model, 21);
        println!(
            "{name:>28} {:?}: median {:.2} ms",
            model.inputs()[0].shape,
            median.as_secs_f64() * 1e3
        );
        medians.insert(name, median);
    }
    let tracking = medians["pose_landmark_full"]
        + 2 * medians["hand_landmark_full"]
        + medians["face_landmark"];
    println!(
        "tracking path (pose + 2 hands + face mesh): {:.2} ms per frame",
        tracking.as_secs_f64() * 1e3
    );
    assert!(
        tracking < Duration::from_millis(100),
        "tracking path takes {tracking:?} per frame, over the 100 ms budget"
    );
}

/// Where the time goes: per operator kind for each model (each operator's fastest of 5 runs).
#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn time_per_operator_kind() {
    for name in MODELS {
        let model = TfliteModel::load(model_path(name)).unwrap();
        let shape = model.inputs()[0].shape.clone();
        let input = || {
            rotoscope::preprocess::tflite::Array::new(
                shape.clone(),
                (0..shape.iter().product::<usize>())
                    .map(|i| ((i * 7919 % 1000) as f32) / 1000.0)
                    .collect(),
            )
        };
        let mut best = model.profile(vec![input()]).unwrap();
        for _ in 0..4 {
            for (b, t) in best.iter_mut().zip(model.profile(vec![input()]).unwrap()) {
                b.elapsed = b.elapsed.min(t.elapsed);
            }
        }
        let mut per_kind: Vec<(String, Duration, usize)> = Vec::new();
        for t in best {
            match per_kind.iter_mut().find(|(op, _, _)| *op == t.op) {
                Some(entry) => {
                    entry.1 += t.elapsed;
                    entry.2 += 1;
                }
                None => per_kind.push((t.op, t.elapsed, 1)),
            }
        }
        per_kind.sort_by_key(|e| std::cmp::Reverse(e.1));
        let summary: Vec<String> = per_kind
            .iter()
            .map(|(op, d, n)| format!("{op}×{n} {:.2}ms", d.as_secs_f64() * 1e3))
            .collect();
        println!("{name}: {}", summary.join(", "));
    }
}

#[test]
#[ignore]
fn scratch_top_nodes() {
    let name = std::env::var("MODEL").unwrap();
    let model = TfliteModel::load(model_path(&name)).unwrap();
    let shape = model.inputs()[0].shape.clone();
    let input = || {
        rotoscope::preprocess::tflite::Array::new(
            shape.clone(),
            (0..shape.iter().product::<usize>())
                .map(|i| ((i * 7919 % 1000) as f32) / 1000.0)
                .collect(),
        )
    };
    let mut best = model.profile(vec![input()]).unwrap();
    for _ in 0..6 {
        for (b, t) in best.iter_mut().zip(model.profile(vec![input()]).unwrap()) {
            b.elapsed = b.elapsed.min(t.elapsed);
        }
    }
    for e in best.iter() {
        println!(
            "NODE {} {} {:.4}",
            e.index,
            e.op,
            e.elapsed.as_secs_f64() * 1e3
        );
    }
}

#[test]
#[ignore]
fn scratch_repeat() {
    let model = TfliteModel::load(model_path("pose_landmark_full")).unwrap();
    let shape = model.inputs()[0].shape.clone();
    for _ in 0..5 {
        let t = model
            .profile(vec![rotoscope::preprocess::tflite::Array::zeros(
                shape.clone(),
            )])
            .unwrap();
        let pick: Vec<String> = t
            .iter()
            .filter(|e| [233usize, 230, 9, 12, 3].contains(&e.index))
            .map(|e| format!("{}:{:.2}", e.index, e.elapsed.as_secs_f64() * 1e3))
            .collect();
        let total: f64 = t.iter().map(|e| e.elapsed.as_secs_f64()).sum();
        println!("{} total {:.1}", pick.join(" "), total * 1e3);
    }
}

#[test]
#[ignore]
fn scratch_inputs() {
    let model = TfliteModel::load(model_path("pose_landmark_full")).unwrap();
    let shape = model.inputs()[0].shape.clone();
    let n: usize = shape.iter().product();
    let rand = Tensor::rand(0f32, 1f32, shape.clone(), &Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let pattern: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1000) as f32) / 1000.0)
        .collect();
    for (label, data) in [
        ("rand", rand.clone()),
        ("pattern", pattern.clone()),
        ("rand", rand),
        ("pattern", pattern),
    ] {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            model
                .run_arrays(vec![rotoscope::preprocess::tflite::Array::new(
                    shape.clone(),
                    data.clone(),
                )])
                .unwrap();
            best = best.min(t.elapsed().as_secs_f64());
        }
        let prof = model
            .profile(vec![rotoscope::preprocess::tflite::Array::new(
                shape.clone(),
                data.clone(),
            )])
            .unwrap();
        let mut top: Vec<_> = prof.iter().collect();
        top.sort_by_key(|e| std::cmp::Reverse(e.elapsed));
        let s: Vec<String> = top
            .iter()
            .take(6)
            .map(|e| format!("{}{}:{:.1}", e.op, e.index, e.elapsed.as_secs_f64() * 1e3))
            .collect();
        println!("{label}: best {:.1} ms; top {}", best * 1e3, s.join(" "));
    }
}
