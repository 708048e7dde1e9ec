//! `rotoscope bench`: our networks and preprocessors against their references, same run
//! (see [`crate::bench`]). Prints a line per case as it finishes, then a markdown table.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

use crate::bench::{self, openvino, torch, BenchCase, BenchOptions, Measurement, Row};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Run only these cases (repeatable, or comma-separated): unet-32, unet-64, unet-64-bf16,
    /// controlnet-64, deepcache-64, vae-encode, vae-decode, hed, pose, frame-anime,
    /// frame-fast (all but frame-anime by default)
    #[arg(long, value_name = "CASE")]
    pub only: Vec<String>,
    /// Timed runs per case (after one warm-up run); the table shows medians
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Skip the reference sides (torch / TFLite, OpenVINO)
    #[arg(long)]
    pub no_reference: bool,
    /// Print the results as one JSON object instead of the markdown table
    #[arg(long)]
    pub json: bool,
    /// Clip whose frames HED and pose run on (512²)
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/astronaut.mp4"))]
    pub clip: PathBuf,
    /// Internal: run one case in this process and print its measurement as JSON
    #[arg(long, hide = true, value_name = "CASE")]
    pub child: Option<String>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let project_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cases = if args.only.is_empty() {
        BenchCase::default_cases()
    } else {
        args.only
            .iter()
            .flat_map(|s| s.split(','))
            .map(BenchCase::parse)
            .collect::<Result<Vec<_>, _>>()?
    };
    let python = if args.no_reference {
        None
    } else {
        torch::find_python(&project_dir)
    };
    let options = BenchOptions {
        cases,
        runs: args.runs.max(1),
        python,
        script: project_dir.join("scripts/bench_torch.py"),
        openvino_script: project_dir.join("scripts/bench_openvino.py"),
        models_dir: crate::preprocess::models_dir(),
        clip: args.clip,
    };

    if let Some(name) = &args.child {
        let case = BenchCase::parse(name)?;
        let measurement = bench::run_case(case, &options)?;
        println!("{}", serde_json::to_string(&measurement)?);
        return Ok(());
    }

    match &options.python {
        Some(p) => eprintln!("reference: {} {}", p.display(), options.script.display()),
        None if args.no_reference => eprintln!("reference: skipped (--no-reference)"),
        None => eprintln!(
            "reference: skipped, no reference Python found (set {} or create /work/venv-ref or \
             .venv-ref with scripts/requirements-fixtures.txt)",
            torch::PYTHON_ENV
        ),
    }
    let exe = std::env::current_exe().context("locating the rotoscope executable")?;
    let mut rows = Vec::new();
    let mut torch_done: Vec<(BenchCase, Measurement)> = Vec::new();
    let mut openvino_done: Vec<(BenchCase, Measurement)> = Vec::new();
    for &case in &options.cases {
        let load = bench::load_average().map(|l| l[0]);
        eprintln!(
            "{}: {} (load {})",
            case.name(),
            case.description(),
            load.map_or("?".into(), |l| format!("{l:.2}"))
        );
        // Ours first, then the reference, each in its own process (own peak RSS, no sharing
        // of the cores).
        let mut child = Command::new(&exe);
        child
            .arg("bench")
            .arg("--child")
            .arg(case.name())
            .arg("--runs")
            .arg(options.runs.to_string())
            .arg("--clip")
            .arg(&options.clip);
        let ours = match bench::run_child(child, case) {
            Ok(m) => m,
            Err(err) => {
                eprintln!("  ours: {err}; case skipped");
                continue;
            }
        };
        eprintln!(
            "  ours: median {:.3} s of {:.3?}, peak RSS {:.2} GiB",
            ours.median(),
            ours.seconds,
            ours.peak_rss_bytes as f64 / (1u64 << 30) as f64
        );
        // The frame cases and the bf16 step share the f32 UNet step as their reference:
        // measured once per command.
        let reference = options.python.as_deref().and_then(|python| {
            let key = case.torch_case();
            if let Some(m) = torch_done.iter().find(|(c, _)| *c == key).map(|(_, m)| m) {
                eprintln!("  ref:  {} measured above in this command", key.name());
                return Some(m.clone());
            }
            let m = report_reference("ref", torch::measure(python, case, &options, &ours))?;
            torch_done.push((key, m.clone()));
            Some(m)
        });
        let openvino = options.python.as_deref().and_then(|python| {
            let key = case.openvino_case()?;
            if let Some(m) = openvino_done
                .iter()
                .find(|(c, _)| *c == key)
                .map(|(_, m)| m)
            {
                eprintln!("  OV:   {} measured above in this command", key.name());
                return Some(m.clone());
            }
            let m = report_reference("OV", openvino::measure(python, case, &options)?)?;
            openvino_done.push((key, m.clone()));
            Some(m)
        });
        rows.push(Row {
            case,
            ours,
            reference,
            openvino,
            load,
        });
    }
    let loads = bench::load_average()
        .map(|l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]))
        .unwrap_or_else(|| "?".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    if args.json {
        let report = bench::report::json_report(&rows, options.runs, cpus);
        return super::print_stdout(&format!("{report}\n"));
    }
    println!(
        "\n{} run(s) per case after a warm-up, medians; {cpus} CPU(s); load average at the end: {loads}\n",
        options.runs,
    );
    super::print_stdout(&bench::markdown_table(&rows))?;
    Ok(())
}

/// Prints a reference's result (or why it has none) under the case's line.
fn report_reference(label: &str, result: bench::Result<Measurement>) -> Option<Measurement> {
    match result {
        Ok(m) if m.unavailable.is_some() => {
            eprintln!(
                "  {label}: not run: {}",
                m.unavailable.as_deref().unwrap_or("")
            );
            Some(m)
        }
        Ok(m) => {
            eprintln!(
                "  {label}:  median {:.3} s of {:.3?}, peak RSS {:.2} GiB ({})",
                m.median(),
                m.seconds,
                m.peak_rss_bytes as f64 / (1u64 << 30) as f64,
                m.reference
            );
            Some(m)
        }
        Err(err) => {
            eprintln!("  {label} reference failed: {err:#}");
            None
        }
    }
}
