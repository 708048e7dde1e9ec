//! The progress view of `rotoscope batch` on a terminal: one line for the jobs (job k of n,
//! its name) above the stage bars of the running job (frames, rate, ETA).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::pipeline::progress::{stage_bars, ProgressReporter, Stage};

pub struct BatchBars {
    multi: MultiProgress,
    jobs: ProgressBar,
    stages: [ProgressBar; 4],
}

impl BatchBars {
    pub fn new(jobs: usize) -> Self {
        Self::with_target(jobs, ProgressDrawTarget::stderr())
    }

    pub fn with_target(jobs: usize, target: ProgressDrawTarget) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let job_style = ProgressStyle::with_template("{prefix:>10} {pos}/{len}  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        let job_bar = multi.add(ProgressBar::new(jobs as u64));
        job_bar.set_style(job_style);
        job_bar.set_prefix("job");
        let stages = stage_bars(&multi);
        Self {
            multi,
            jobs: job_bar,
            stages,
        }
    }

    /// Job `number` (from 1) starts.
    pub fn start_job(&self, number: usize, name: &str) {
        self.jobs.set_position(number as u64);
        self.jobs.set_message(name.to_string());
        for bar in &self.stages {
            bar.reset();
            bar.set_length(0);
        }
    }

    pub fn finish(&self) {
        self.jobs.finish_and_clear();
        for bar in &self.stages {
            bar.finish_and_clear();
        }
    }

    /// Print a line above the bars without tearing them.
    pub fn println(&self, text: &str) {
        // A hidden target (stderr is not a terminal) swallows println; messages must not be.
        if self.multi.is_hidden() || self.multi.println(text).is_err() {
            eprintln!("{text}");
        }
    }
}

impl ProgressReporter for BatchBars {
    fn begin(&self, stage: Stage, total: u64) {
        let bar = &self.stages[stage as usize];
        bar.reset();
        bar.set_length(total);
    }

    fn advance(&self, stage: Stage, done: u64) {
        self.stages[stage as usize].set_position(done);
    }

    fn finish(&self, stage: Stage) {
        self.stages[stage as usize].finish();
    }
}
