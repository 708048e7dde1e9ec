//! Inference time of the six MediaPipe models at their native input sizes, and the
//! per-frame cost of the tracking path (pose landmarks + two hands + face mesh; the
//! detectors only run when tracking is lost).
//!
//!   cargo bench --bench tflite
//! Each model is timed on one thread (wall and process CPU time, the latter robust to other
//! load on the machine) and on the global rayon pool (all cores). The TFLite reference on the
//! same machine: `python scripts/fixtures/tflite.py` (see its `bench`).
//! docs/ARCHITECTURE.md, "Performance": preprocessing ≥ 10 frames/s with tracking, so the tracking path's single-thread
//! CPU time must stay well under 100 ms per frame.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rotoscope::tflite::{Array, TfliteModel};

const MODELS: [&str; 6] = [
    "pose_detection",
    "pose_landmark_full",
    "palm_detection_full",
    "hand_landmark_full",
    "face_detection_short_range",
    "face_landmark",
];

const RUNS: usize = 21;

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

/// A deterministic image-like input in [0, 1).
fn input(model: &TfliteModel) -> Array {
    let shape = model.inputs()[0].shape.clone();
    let n = shape.iter().product::<usize>();
    Array::new(
        shape,
        (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect(),
    )
}

/// User + system CPU time of this process so far (from /proc/self/stat, clock ticks).
fn process_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // CLK_TCK is 100 on Linux
}

struct Timing {
    min: Duration,
    median: Duration,
    cpu_per_run: Duration,
}

fn time_runs(model: &TfliteModel) -> Timing {
    model.run_arrays(vec![input(model)]).unwrap();
    let cpu_start = process_cpu_time();
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let x = input(model);
            let start = Instant::now();
            model.run_arrays(vec![x]).unwrap();
            start.elapsed()
        })
        .collect();
    let cpu_per_run = (process_cpu_time() - cpu_start) / RUNS as u32;
    times.sort();
    Timing {
        min: times[0],
        median: times[RUNS / 2],
        cpu_per_run,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    inference_times();
    time_per_operator_kind();
}

fn inference_times() {
    let single = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let mut cpu = std::collections::HashMap::new();
    println!(
        "{:>28} {:>16} | 1 thread: median / min / CPU ms | {} threads: median / min ms",
        "model",
        "input",
        rayon::current_num_threads()
    );
    for name in MODELS {
        let model = TfliteModel::load(model_path(name)).unwrap();
        let one = single.install(|| time_runs(&model));
        let all = time_runs(&model);
        println!(
            "{name:>28} {:>16} | {:7.2} {:7.2} {:7.2} | {:7.2} {:7.2}",
            format!("{:?}", model.inputs()[0].shape),
            ms(one.median),
            ms(one.min),
            ms(one.cpu_per_run),
            ms(all.median),
            ms(all.min)
        );
        cpu.insert(name, one.cpu_per_run);
    }
    let tracking = cpu["pose_landmark_full"] + 2 * cpu["hand_landmark_full"] + cpu["face_landmark"];
    println!(
        "tracking path (pose + 2 hands + face mesh), single-thread CPU: {:.1} ms per frame",
        ms(tracking)
    );
    if tracking >= Duration::from_millis(100) {
        println!("  over the 100 ms per-frame budget (docs/ARCHITECTURE.md, \"Performance\": ≥ 10 frames/s with tracking)");
    }
}

/// Where the time goes: per operator kind for each model (each operator's fastest of 5
/// single-thread runs).
fn time_per_operator_kind() {
    let single = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for name in MODELS {
        let model = TfliteModel::load(model_path(name)).unwrap();
        let mut best = single
            .install(|| model.profile(vec![input(&model)]))
            .unwrap();
        for _ in 0..4 {
            let again = single
                .install(|| model.profile(vec![input(&model)]))
                .unwrap();
            for (b, t) in best.iter_mut().zip(again) {
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
            .map(|(op, d, n)| format!("{op}×{n} {:.2}", ms(*d)))
            .collect();
        println!("{name} (ms): {}", summary.join(", "));
    }
}
