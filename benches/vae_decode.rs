//! VAE decode at SD1.5 shapes (random weights) against diffusers on torch, same run.
//!
//! `cargo bench --bench vae_decode -- [SIZE] [--runs N] [--encode] [--no-torch]`
//! Use the release (bench) profile: the dev profile keeps debug assertions and overflow checks
//! on in dependencies, which makes gemm about 4× slower.
//! The torch reference runs `scripts/bench_torch_vae.py` with `$ROTOSCOPE_REF_PYTHON`
//! (default /work/venv-ref/bin/python) after the Rust timing, so both see the same machine.

use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use rotoscope::models::vae::{AutoencoderKL, VaeConfig};

/// Fresh detached tensors drawn from each parameter's default init (no gradient tracking).
struct RandomWeights;

impl SimpleBackend for RandomWeights {
    fn get(&self, s: Shape, _: &str, init: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        Ok(init.var(s, dtype, dev)?.as_detached_tensor())
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("random weights need a shape for {name}")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        // Take the current diffusers attention names.
        !name.contains("query")
    }
}

/// User + system CPU seconds of this process (all threads).
fn cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(512);
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(2);
    let encode = args.iter().any(|a| a == "--encode");
    let with_torch = !args.iter().any(|a| a == "--no-torch");
    let op = if encode { "encode" } else { "decode" };

    let dev = Device::Cpu;
    let vb = VarBuilder::from_backend(Box::new(RandomWeights), DType::F32, dev.clone());
    let vae = AutoencoderKL::load(vb, &VaeConfig::sd15())?;
    let mut times = Vec::new();
    let mut cpu_times = Vec::new();
    for _ in 0..runs {
        let start;
        let cpu_start;
        if encode {
            let image = Tensor::rand(-1f32, 1.0, (1, 3, size, size), &dev)?;
            (start, cpu_start) = (Instant::now(), cpu_seconds());
            vae.encode(&image)?;
        } else {
            let latents = Tensor::randn(0f32, 1.0, (1, 4, size / 8, size / 8), &dev)?;
            (start, cpu_start) = (Instant::now(), cpu_seconds());
            vae.decode(&latents)?;
        }
        times.push(start.elapsed().as_secs_f64());
        cpu_times.push(cpu_seconds() - cpu_start);
    }
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    let best_cpu = cpu_times.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "rotoscope vae {op} {size}²: wall {times:.3?} s (best {best:.3}), cpu {cpu_times:.3?} s (best {best_cpu:.3}), peak RSS {:.0} MB",
        peak_rss_mb()
    );

    if with_torch {
        let python = std::env::var("ROTOSCOPE_REF_PYTHON")
            .unwrap_or_else(|_| "/work/venv-ref/bin/python".to_string());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench_torch_vae.py");
        let mut cmd = Command::new(&python);
        cmd.arg(script)
            .args(["--size", &size.to_string(), "--runs", &runs.to_string()]);
        if encode {
            cmd.arg("--encode");
        }
        match cmd.output() {
            Ok(out) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout);
                let line = text.lines().last().unwrap_or_default();
                let json: serde_json::Value = serde_json::from_str(line)?;
                let torch_best = json["best"].as_f64().unwrap_or(f64::NAN);
                let torch_cpu = json["best_cpu"].as_f64().unwrap_or(f64::NAN);
                println!("torch     vae {op} {size}²: {line}");
                println!(
                    "ratio rotoscope/torch: wall {:.2}, cpu {:.2}",
                    best / torch_best,
                    best_cpu / torch_cpu
                );
            }
            Ok(out) => println!(
                "torch reference failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => println!("torch reference not run ({python}: {e})"),
        }
    }
    Ok(())
}
