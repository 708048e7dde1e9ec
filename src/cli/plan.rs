//! `rotoscope plan`: how a clip would be split into batches, with a memory and time
//! estimate for rendering it with the preset.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde_json::json;

use super::print_stdout;
use crate::app::args::FrameSelection;
use crate::app::io::frame_range;
use crate::app::resolve::load_preset;
use crate::app::resolve::{read_options, Sampling};
use crate::pipeline::plan::{estimate, plan_for_preset, BatchPlan, Estimate};
use crate::preset::{Compute, Preset, PresetOverrides};
use crate::video::{probe_with, VideoInfo};

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Input video
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,
    /// Preset file, or the name of a bundled preset (anime, watercolor, lineart-ink,
    /// anime-animatediff, anime-fast)
    #[arg(short = 'p', long = "preset", value_name = "PRESET")]
    pub preset: PathBuf,
    /// Only plan frames A..B (start inclusive, end exclusive; either may be left out)
    #[arg(long, value_name = "A..B")]
    pub frames: Option<FrameSelection>,
    /// Print the plan and estimate as one JSON object
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: PlanArgs) -> anyhow::Result<()> {
    let preset = load_preset(&args.preset, &PresetOverrides::default())?;
    let whole = probe_with(&args.input, &read_options(&preset))?;
    let range = frame_range(&whole, args.frames)?.unwrap_or(0..whole.frame_count);
    let plan = plan_for_preset((range.end - range.start) as usize, &preset)
        .with_context(|| format!("planning batches for {}", args.preset.display()))?;
    let (width, height) = preset.render_size(whole.width, whole.height);
    let estimate = estimate(&plan, &preset, width, height);
    let info = &whole;
    let text = if args.json {
        let value = json!({
            "input": args.input,
            "video": {
                "width": info.width,
                "height": info.height,
                "fps": info.fps.to_string(),
                "frame_count": info.frame_count,
                "duration_secs": info.duration_secs,
                "has_audio": info.has_audio,
                "codec": info.codec,
            },
            "frames": {"start": range.start, "end": range.end},
            "preset": {
                "source": args.preset,
                "name": preset.name,
                "fingerprint": preset.fingerprint(),
            },
            "plan": plan,
            "estimate": estimate,
        });
        format!("{value}\n")
    } else {
        describe(
            &args.input,
            &args.preset,
            &preset,
            info,
            &range,
            &plan,
            &estimate,
        )
    };
    print_stdout(&text)
}

fn describe(
    input: &Path,
    preset_arg: &Path,
    preset: &Preset,
    info: &VideoInfo,
    range: &Range<u64>,
    plan: &BatchPlan,
    estimate: &Estimate,
) -> String {
    let mut s = String::new();
    let first = range.start;
    let _ = writeln!(
        s,
        "input     {}: {}x{}, {} fps, {} frames ({:.2} s){}",
        input.display(),
        info.width,
        info.height,
        info.fps,
        info.frame_count,
        info.duration_secs,
        if info.has_audio {
            ", with audio"
        } else {
            ", no audio"
        }
    );
    if range.end - range.start != info.frame_count {
        let _ = writeln!(s, "          only frames {}..{}", range.start, range.end);
    }
    let controls: Vec<&str> = preset.controlnets.iter().map(|c| c.kind.as_str()).collect();
    let _ = writeln!(
        s,
        "preset    {} ({}), fingerprint {}",
        preset.name.as_deref().unwrap_or("unnamed"),
        preset_arg.display(),
        &preset.fingerprint()[..12]
    );
    let sampler = &preset.sampler;
    let _ = writeln!(
        s,
        "render    {}x{}, {} {} steps, cfg {}, strength {}, seed {}, ControlNets: {}",
        estimate.width,
        estimate.height,
        sampler.scheduler,
        sampler.steps,
        sampler.cfg_scale,
        sampler.strength,
        Sampling::of(preset).seed,
        if controls.is_empty() {
            "none".to_string()
        } else {
            controls.join(", ")
        }
    );
    let _ = writeln!(s, "temporal  {}", temporal_options(preset));
    let _ = writeln!(
        s,
        "batches   {} (at most {} frames, {} shared with the next)",
        plan.batches.len(),
        plan.batch_frames,
        plan.overlap
    );
    let _ = writeln!(
        s,
        "  {:>5}  {:>13}  {:>6}  {:>8}",
        "batch", "frames", "count", "overlap"
    );
    for batch in &plan.batches {
        let range = format!(
            "{}..{}",
            first + batch.start as u64,
            first + batch.end as u64
        );
        let _ = writeln!(
            s,
            "  {:>5}  {:>13}  {:>6}  {:>8}",
            batch.index,
            range,
            batch.len(),
            batch.overlap_with_previous
        );
    }
    let _ = writeln!(
        s,
        "estimate  (rough: SD1.5 at the target speed of docs/ARCHITECTURE.md \"Performance\", a 2-core AVX-512 machine; compute {})",
        match preset.compute {
            Compute::F32 => "f32",
            Compute::Bf16 => "bf16",
        }
    );
    let _ = writeln!(
        s,
        "  frames rendered  {} ({} in overlaps render twice)",
        estimate.rendered_frames,
        estimate.rendered_frames - plan.total_frames
    );
    let attention_cache = if estimate.attention_cache_bytes > 0 {
        format!(
            ", cross-frame attention cache {}",
            gigabytes(estimate.attention_cache_bytes)
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "  peak memory      ~{} (weights {}, batch frames {}, activations {}{})",
        gigabytes(estimate.peak_memory_bytes),
        gigabytes(estimate.weights_bytes),
        gigabytes(estimate.batch_buffers_bytes),
        gigabytes(estimate.activations_bytes),
        attention_cache
    );
    let detail = if estimate.detail_seconds_per_frame > 0.0 {
        format!(
            ": {:.1} s the frame, {:.1} s face / hand detailing",
            estimate.frame_seconds, estimate.detail_seconds_per_frame
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "  render time      ~{} ({:.1} s per frame{detail})",
        duration(estimate.total_seconds),
        estimate.seconds_per_frame
    );
    s
}

/// The temporal options the preset switches on, e.g. `temporalnet (warped), flow_init 0.75`.
fn temporal_options(preset: &Preset) -> String {
    let t = &preset.temporal;
    let mut options = Vec::new();
    if t.temporalnet.enabled {
        options.push(format!(
            "temporalnet{}",
            if t.temporalnet.warp { " (warped)" } else { "" }
        ));
    }
    let cross = &t.cross_frame_attention;
    if cross.active() {
        let refs: Vec<&str> = [(cross.anchor, "anchor"), (cross.previous, "previous")]
            .iter()
            .filter_map(|&(on, name)| on.then_some(name))
            .collect();
        options.push(format!("cross-frame attention ({})", refs.join(" + ")));
    }
    if t.flow_init.enabled {
        options.push(format!("flow_init {}", t.flow_init.strength));
    }
    if let Some(motion) = &t.motion_module {
        options.push(format!(
            "AnimateDiff motion module {} (windows of {} sharing {}, {})",
            motion.path,
            motion.context_length,
            motion.context_overlap,
            motion.weighting.as_str()
        ));
    }
    if options.is_empty() {
        "none (every frame on its own, same seed)".to_string()
    } else {
        options.join(", ")
    }
}

fn gigabytes(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

/// `3 h 05 min`, `12 min 30 s`, `45 s`.
pub fn duration(seconds: f64) -> String {
    let total = seconds.round().max(0.0) as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h} h {m:02} min")
    } else if m > 0 {
        format!("{m} min {s:02} s")
    } else {
        format!("{s} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(45.4), "45 s");
        assert_eq!(duration(750.0), "12 min 30 s");
        assert_eq!(duration(3.0 * 3600.0 + 300.0), "3 h 05 min");
    }
}
