//! `rotoscope score`: temporal-consistency metrics of a render against its input
//! (docs/ARCHITECTURE.md, "Temporal metrics"): warp error of the output along the input's optical flow, and seam error
//! at batch boundaries, each next to the same metric for the input itself.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::{print_stdout, CliError};
use crate::app::args::FrameSelection;
use crate::app::io::frame_range;
use crate::app::resolve::load_preset;
use crate::flow::FlowParams;
use crate::pipeline::plan::plan_for_preset;
use crate::preset::PresetOverrides;
use crate::score::{ScoreReport, TemporalScorer};
use crate::video::{probe, ReadOptions, VideoReader};

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// The source clip
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,
    /// The rendered clip (same number of frames as the input, or as --frames selects)
    #[arg(value_name = "OUTPUT")]
    pub output: PathBuf,
    /// The part of INPUT the output was rendered from (as given to `render --frames`)
    #[arg(long, value_name = "A..B")]
    pub frames: Option<FrameSelection>,
    /// Preset the output was rendered with: its batch plan gives the seams
    #[arg(
        short = 'p',
        long = "preset",
        value_name = "PRESET",
        conflicts_with = "batches"
    )]
    pub preset: Option<PathBuf>,
    /// Batch frame ranges explicitly, e.g. `0..96,86..182` (output frame numbers)
    #[arg(long, value_name = "RANGES")]
    pub batches: Option<String>,
    /// Print the metrics as one JSON object
    #[arg(long)]
    pub json: bool,
    /// No progress bar
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    let whole_input = probe(&args.input)?;
    let range = frame_range(&whole_input, args.frames)?;
    let input = VideoReader::open_with(
        &args.input,
        ReadOptions {
            frames: range.clone(),
            ..ReadOptions::default()
        },
    )?;
    let output = VideoReader::open(&args.output)?;
    let (in_info, out_info) = (input.info().clone(), output.info().clone());
    if in_info.frame_count != out_info.frame_count {
        return Err(CliError::BadFlag {
            flag: "OUTPUT",
            value: args.output.display().to_string(),
            reason: format!(
                "has {} frames but {} has {} (pass the render's --frames A..B)",
                out_info.frame_count,
                args.input.display(),
                in_info.frame_count
            ),
        }
        .into());
    }
    let batches = seams(&args, out_info.frame_count)?;

    let progress = if args.quiet || args.json {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(out_info.frame_count);
        bar.set_style(
            ProgressStyle::with_template("score {bar:30} {pos}/{len} frames, eta {eta}")
                .expect("static progress template"),
        );
        bar
    };
    let mut scorer = TemporalScorer::new(out_info.width, out_info.height, FlowParams::default());
    for (a, b) in input.zip(output) {
        let a = a.with_context(|| format!("reading {}", args.input.display()))?;
        let b = b.with_context(|| format!("reading {}", args.output.display()))?;
        scorer.push((a.width, a.height, &a.data), &b.data);
        progress.inc(1);
    }
    progress.finish_and_clear();
    let report = scorer.finish(batches.as_deref());
    let text = if args.json {
        format!(
            "{}\n",
            json!({
                "input": args.input,
                "output": args.output,
                "batches": batches.as_ref().map(|b| b.iter().map(|r| [r.start, r.end]).collect::<Vec<_>>()),
                "report": report,
            })
        )
    } else {
        describe(&report, batches.is_some())
    };
    print_stdout(&text)
}

/// Batch ranges for the seam error, from `--batches` or the preset's plan.
fn seams(args: &ScoreArgs, frames: u64) -> anyhow::Result<Option<Vec<Range<u64>>>> {
    if let Some(text) = &args.batches {
        return parse_batches(text, frames).map(Some).map_err(|reason| {
            CliError::BadFlag {
                flag: "--batches",
                value: text.clone(),
                reason,
            }
            .into()
        });
    }
    let Some(preset_path) = &args.preset else {
        return Ok(None);
    };
    let preset = load_preset(preset_path, &PresetOverrides::default())?;
    let plan = plan_for_preset(frames as usize, &preset)
        .with_context(|| format!("planning batches for {}", preset_path.display()))?;
    Ok(Some(
        plan.batches
            .iter()
            .map(|b| b.start as u64..b.end as u64)
            .collect(),
    ))
}

/// `0..96,86..182` → ranges; they must start at 0, chain without gaps and end at `frames`.
fn parse_batches(text: &str, frames: u64) -> Result<Vec<Range<u64>>, String> {
    let mut ranges = Vec::new();
    for part in text.split(',') {
        let (a, b) = part
            .trim()
            .split_once("..")
            .ok_or_else(|| format!("{part:?} is not a range like 0..96"))?;
        let parse = |s: &str| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| format!("{s:?} is not a frame number"))
        };
        let (a, b) = (parse(a)?, parse(b)?);
        if a >= b {
            return Err(format!("{a}..{b} is empty"));
        }
        ranges.push(a..b);
    }
    if ranges.first().map(|r| r.start) != Some(0) {
        return Err("the first batch must start at frame 0".into());
    }
    for pair in ranges.windows(2) {
        if pair[1].start > pair[0].end || pair[1].start <= pair[0].start {
            return Err(format!(
                "batch {}..{} must start inside or right after {}..{}",
                pair[1].start, pair[1].end, pair[0].start, pair[0].end
            ));
        }
    }
    if ranges.last().map(|r| r.end) != Some(frames) {
        return Err(format!(
            "the last batch must end at frame {frames}, the clip's length"
        ));
    }
    Ok(ranges)
}

fn describe(report: &ScoreReport, has_batches: bool) -> String {
    let fmt =
        |v: Option<f64>, digits: usize| v.map_or("n/a".to_string(), |v| format!("{v:.digits$}"));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "frames      {} at {}x{}",
        report.frames, report.width, report.height
    );
    let _ = writeln!(s, "{:<12}{:>14}{:>14}", "", "output", "input");
    let _ = writeln!(
        s,
        "{:<12}{:>14}{:>14}",
        "warp error",
        fmt(report.output.warp_error, 6),
        fmt(report.input.warp_error, 6)
    );
    if has_batches {
        let _ = writeln!(
            s,
            "{:<12}{:>14}{:>14}",
            "seam error",
            fmt(report.output.seam_error, 3),
            fmt(report.input.seam_error, 3)
        );
    } else {
        let _ = writeln!(
            s,
            "seam error  n/a (pass -p PRESET or --batches to locate the seams)"
        );
    }
    let _ = writeln!(
        s,
        "warp error: masked MSE (RGB in [0,1]) of frame t vs frame t+1 warped back by the input's flow; \
         seam error: boundary / interior warp error (1.0 = no visible seams)"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_parse_and_must_cover_the_clip() {
        assert_eq!(parse_batches("0..10, 7..20", 20), Ok(vec![0..10, 7..20]));
        assert!(parse_batches("0..10,12..20", 20)
            .unwrap_err()
            .contains("inside or right after"));
        assert!(parse_batches("1..20", 20).unwrap_err().contains("frame 0"));
        assert!(parse_batches("0..10", 20)
            .unwrap_err()
            .contains("end at frame 20"));
        assert!(parse_batches("0..x", 20).is_err());
    }
}
