//! One SD1.5 UNet step (batch 2, 32² and 64² latents, random weights) against diffusers on torch
//! CPU, measured in the same run:
//!
//!     cargo bench --bench unet_step
//!
//! The torch reference (`scripts/bench_torch_unet.py --serve`) runs in a child process and the
//! two take turns step by step, so both see the same load on a shared machine. Environment:
//! `TORCH_PYTHON` (default `/work/venv-ref/bin/python`, then `python3`), `UNET_BENCH_SIZES`
//! (default `32,64`), `UNET_BENCH_RUNS` (default 3). Without a working torch the Rust timings are
//! printed alone.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use rotoscope::models::unet::bench::{peak_rss_bytes, random_sd15_unet, time_one_step};

/// The torch side, stepping on request.
struct Torch {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Torch {
    fn start() -> Option<Self> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench_torch_unet.py");
        let python = std::env::var("TORCH_PYTHON").unwrap_or_else(|_| {
            if std::path::Path::new("/work/venv-ref/bin/python").exists() {
                "/work/venv-ref/bin/python".into()
            } else {
                "python3".into()
            }
        });
        let mut child = match Command::new(&python)
            .arg(script)
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cannot run {python}: {e}; timing candle alone");
                return None;
            }
        };
        let stdin = child.stdin.take()?;
        let mut stdout = BufReader::new(child.stdout.take()?);
        let mut line = String::new();
        if stdout.read_line(&mut line).ok()? == 0 || line.trim() != "ready" {
            eprintln!("torch reference did not start; timing candle alone");
            let _ = child.kill();
            return None;
        }
        Some(Self {
            child,
            stdin,
            stdout,
        })
    }

    /// (seconds, peak RSS bytes) of one step.
    fn step(&mut self, size: usize) -> Option<(f64, u64)> {
        writeln!(self.stdin, "{size}").ok()?;
        self.stdin.flush().ok()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).ok()?;
        let v: serde_json::Value = serde_json::from_str(&line).ok()?;
        Some((v["seconds"].as_f64()?, v["peak_rss_bytes"].as_u64()?))
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn fmt(v: &[f64]) -> String {
    v.iter()
        .map(|s| format!("{s:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    let sizes: Vec<usize> = std::env::var("UNET_BENCH_SIZES")
        .unwrap_or_else(|_| "32,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs: usize = std::env::var("UNET_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);

    let mut torch = Torch::start();
    let unet = random_sd15_unet().expect("build SD1.5 UNet");
    println!(
        "candle weights loaded: peak RSS {:.2} GiB",
        gib(peak_rss_bytes().unwrap_or(0))
    );
    for &size in &sizes {
        // Warm-up, then alternate torch and candle steps.
        let _ = torch.as_mut().and_then(|t| t.step(size));
        time_one_step(&unet, 2, size).expect("UNet step");
        let (mut ours, mut theirs, mut torch_rss) = (Vec::new(), Vec::new(), 0);
        for _ in 0..runs {
            if let Some((s, rss)) = torch.as_mut().and_then(|t| t.step(size)) {
                theirs.push(s);
                torch_rss = rss;
            }
            ours.push(time_one_step(&unet, 2, size).expect("UNet step"));
        }
        let rss = peak_rss_bytes().unwrap_or(0);
        println!(
            "candle {size}x{size} batch 2: median {:.3} s, best {:.3} s ({}), peak RSS {:.2} GiB",
            median(&ours),
            best(&ours),
            fmt(&ours),
            gib(rss)
        );
        if !theirs.is_empty() {
            println!(
                "torch  {size}x{size} batch 2: median {:.3} s, best {:.3} s ({}), peak RSS {:.2} GiB",
                median(&theirs),
                best(&theirs),
                fmt(&theirs),
                gib(torch_rss)
            );
            println!(
                "  -> candle/torch time {:.2}x (median), {:.2}x (best); peak RSS {:.2}x",
                median(&ours) / median(&theirs),
                best(&ours) / best(&theirs),
                rss as f64 / torch_rss as f64
            );
        }
    }
}
