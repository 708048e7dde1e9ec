//! Progress of the pipeline's stages: terminal bars (indicatif), JSON lines on stdout for
//! programs (`--json`), or nothing (`--quiet`).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Decode,
    Preprocess,
    Render,
    Encode,
}

impl Stage {
    pub const ALL: [Stage; 4] = [
        Stage::Decode,
        Stage::Preprocess,
        Stage::Render,
        Stage::Encode,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Preprocess => "preprocess",
            Stage::Render => "render",
            Stage::Encode => "encode",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// Receives progress from the stage threads.
pub trait ProgressReporter: Send + Sync {
    /// `stage` will handle `total` frames.
    fn begin(&self, stage: Stage, total: u64);
    /// `stage` has finished `done` frames so far.
    fn advance(&self, stage: Stage, done: u64);
    /// `stage` is done (successfully or not).
    fn finish(&self, stage: Stage);
}

/// `--quiet`.
pub struct SilentProgress;

impl ProgressReporter for SilentProgress {
    fn begin(&self, _: Stage, _: u64) {}
    fn advance(&self, _: Stage, _: u64) {}
    fn finish(&self, _: Stage) {}
}

/// One bar per stage on stderr. indicatif draws nothing when stderr is not a terminal.
pub struct BarProgress {
    multi: MultiProgress,
    bars: [ProgressBar; 4],
}

impl BarProgress {
    pub fn new() -> Self {
        Self::with_target(ProgressDrawTarget::stderr())
    }

    pub fn with_target(target: ProgressDrawTarget) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let bars = stage_bars(&multi);
        Self { multi, bars }
    }

    /// Print a line above the bars without tearing them.
    pub fn println(&self, text: &str) {
        // A hidden target (stderr is not a terminal) swallows println; messages must not be.
        if self.multi.is_hidden() || self.multi.println(text).is_err() {
            eprintln!("{text}");
        }
    }
}

impl Default for BarProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl ProgressReporter for BarProgress {
    fn begin(&self, stage: Stage, total: u64) {
        let bar = &self.bars[stage.slot()];
        bar.set_length(total);
        bar.reset_elapsed();
    }

    fn advance(&self, stage: Stage, done: u64) {
        self.bars[stage.slot()].set_position(done);
    }

    fn finish(&self, stage: Stage) {
        self.bars[stage.slot()].finish();
    }
}

/// `--json`: one JSON object per line on stdout.
///
/// Progress lines look like
/// `{"event":"progress","stage":"decode","frame":12,"total":72,"elapsed":0.53}` where `frame`
/// counts the frames the stage has finished (it equals `total` at the end) and `elapsed` is
/// seconds since the reporter was created. Other events (`start`, `done`) go through
/// [`JsonProgress::emit`].
pub struct JsonProgress {
    started: Instant,
    totals: [AtomicU64; 4],
    out: Mutex<std::io::Stdout>,
}

#[derive(Serialize)]
struct ProgressEvent {
    event: &'static str,
    stage: Stage,
    frame: u64,
    total: u64,
    elapsed: f64,
}

impl JsonProgress {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            totals: Default::default(),
            out: Mutex::new(std::io::stdout()),
        }
    }

    pub fn elapsed_secs(&self) -> f64 {
        // Millisecond precision keeps the lines short and readable.
        (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
    }

    /// Write one event as a single line. A closed stdout is not worth failing a render.
    pub fn emit<T: Serialize>(&self, event: &T) {
        let Ok(mut line) = serde_json::to_vec(event) else {
            return;
        };
        line.push(b'\n');
        let mut out = match self.out.lock() {
            Ok(out) => out,
            Err(poisoned) => poisoned.into_inner(),
        };
        let _ = out.write_all(&line);
        let _ = out.flush();
    }
}

impl Default for JsonProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl ProgressReporter for JsonProgress {
    fn begin(&self, stage: Stage, total: u64) {
        self.totals[stage.slot()].store(total, Ordering::Relaxed);
    }

    fn advance(&self, stage: Stage, done: u64) {
        self.emit(&ProgressEvent {
            event: "progress",
            stage,
            frame: done,
            total: self.totals[stage.slot()].load(Ordering::Relaxed),
            elapsed: self.elapsed_secs(),
        });
    }

    fn finish(&self, _: Stage) {}
}

/// One bar per stage (frames done, rate, ETA), added to `multi` in pipeline order.
pub fn stage_bars(multi: &MultiProgress) -> [ProgressBar; Stage::ALL.len()] {
    let style = ProgressStyle::with_template(
        "{prefix:>10} [{bar:32}] {pos:>6}/{len:<6} {rate:>12}  eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .with_key(
        "rate",
        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.1} frames/s", state.per_sec());
        },
    )
    .progress_chars("=> ");
    Stage::ALL.map(|stage| {
        let bar = multi.add(ProgressBar::new(0));
        bar.set_style(style.clone());
        bar.set_prefix(stage.as_str());
        bar
    })
}
