//! One SD1.5 UNet step (batch 2, 32² and 64² latents, random weights) against diffusers on torch
//! CPU, measured in the same run:
//!
//!     cargo bench --bench unet_step
//!
//! Environment: `TORCH_PYTHON` (default `/work/venv-ref/bin/python`, then `python3`) runs
//! `scripts/bench_torch_unet.py` first; `UNET_BENCH_SIZES` (default `32,64`), `UNET_BENCH_RUNS`
//! (default 3). Without a working torch the Rust timings are printed alone. On a shared machine
//! compare the best runs: the median suffers from other processes. The two run one after the
//! other, not interleaved: interleaving slowed both (idle thread pools of one spinning while the
//! other works).

use std::process::Command;

use rotoscope::models::unet::bench::{peak_rss_bytes, random_sd15_unet, time_unet_step};

struct TorchTiming {
    latent_size: usize,
    median: f64,
    min: f64,
    peak_rss_bytes: u64,
}

fn torch_timings(sizes: &[usize], runs: usize) -> Vec<TorchTiming> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench_torch_unet.py");
    let python = std::env::var("TORCH_PYTHON").unwrap_or_else(|_| {
        if std::path::Path::new("/work/venv-ref/bin/python").exists() {
            "/work/venv-ref/bin/python".into()
        } else {
            "python3".into()
        }
    });
    let sizes: Vec<String> = sizes.iter().map(usize::to_string).collect();
    let output = Command::new(&python)
        .arg(script)
        .arg("--runs")
        .arg(runs.to_string())
        .arg("--sizes")
        .args(&sizes)
        .output();
    let output = match output {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!(
                "torch reference failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return Vec::new();
        }
        Err(e) => {
            eprintln!("cannot run {python}: {e}");
            return Vec::new();
        }
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|v| {
            Some(TorchTiming {
                latent_size: v["latent_size"].as_u64()? as usize,
                median: v["median"].as_f64()?,
                min: v["seconds"]
                    .as_array()?
                    .iter()
                    .filter_map(|s| s.as_f64())
                    .fold(f64::INFINITY, f64::min),
                peak_rss_bytes: v["peak_rss_bytes"].as_u64()?,
            })
        })
        .collect()
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn main() {
    rotoscope::alloc::tune_malloc();
    let sizes: Vec<usize> = std::env::var("UNET_BENCH_SIZES")
        .unwrap_or_else(|_| "32,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs: usize = std::env::var("UNET_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);

    // Torch first, in its own process, so the two never compete for the cores.
    let torch = torch_timings(&sizes, runs);
    for t in &torch {
        println!(
            "torch  {0}x{0} batch 2: median {1:.3} s, best {2:.3} s, peak RSS {3:.2} GiB",
            t.latent_size,
            t.median,
            t.min,
            gib(t.peak_rss_bytes)
        );
    }

    let unet = random_sd15_unet().expect("build SD1.5 UNet");
    let after_load = peak_rss_bytes().unwrap_or(0);
    println!("candle weights loaded: peak RSS {:.2} GiB", gib(after_load));
    for &size in &sizes {
        let timing = time_unet_step(&unet, 2, size, runs).expect("UNet step");
        let median = timing.median_seconds();
        let best = timing.seconds.iter().copied().fold(f64::INFINITY, f64::min);
        let rss = timing.peak_rss_bytes.unwrap_or(0);
        let runs: Vec<String> = timing.seconds.iter().map(|s| format!("{s:.3}")).collect();
        print!(
            "candle {size}x{size} batch 2: median {median:.3} s, best {best:.3} s ({}), peak RSS {:.2} GiB",
            runs.join(", "),
            gib(rss)
        );
        match torch.iter().find(|t| t.latent_size == size) {
            Some(t) => println!(
                "  -> time {:.2}x torch (median), {:.2}x (best); peak RSS {:.2}x torch",
                median / t.median,
                best / t.min,
                rss as f64 / t.peak_rss_bytes as f64
            ),
            None => println!(),
        }
    }
}
