//! The threaded render pipeline: decode → preprocess → render (per batch, + detail, blend)
//! → encode, one thread per stage, joined by bounded channels.
//!
//! Memory stays flat whatever the clip's length: each channel holds at most
//! `channel_capacity` frames, the render stage holds one batch (plus the overlap it shares
//! with the next), and nothing else accumulates frames.
//!
//! A failing stage returns its error and drops its channel ends; its neighbours then stop
//! (they report [`PipelineError::Cancelled`], which never hides the real error), and the
//! sink is dropped without `finish`, so no partial output appears at the final path.

use std::sync::Arc;
use std::thread::{Builder, Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use serde::Serialize;

use crate::pipeline::blend::{blend_frames, BlendError};
use crate::pipeline::plan::{Batch, BatchPlan};
use crate::pipeline::progress::{ProgressReporter, Stage};
use crate::pipeline::stages::{
    Detailer, FrameRenderer, FrameSink, FrameSource, PreparedFrame, Preprocessor, SinkSummary,
    StageError,
};
use crate::preset::OverlapBlend;
use crate::video::Frame;

/// Frames each channel buffers between two stages: enough to keep both sides busy.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("nothing to render: the plan has no frames")]
    NoFrames,
    #[error("decode (after {frame} frames)")]
    Decode {
        frame: u64,
        #[source]
        source: StageError,
    },
    #[error("the input ended after {got} frames, {expected} were expected (file truncated?)")]
    InputEndedEarly { got: u64, expected: u64 },
    #[error("preprocess ({name}) of input frame {frame}")]
    Preprocess {
        name: String,
        frame: u64,
        #[source]
        source: StageError,
    },
    #[error("render ({renderer}) of batch {batch} (frames {start}..{end})")]
    Render {
        renderer: String,
        batch: usize,
        start: usize,
        end: usize,
        #[source]
        source: StageError,
    },
    #[error("renderer {renderer} returned {got} frames for batch {batch}, expected {expected}")]
    RendererFrameCount {
        renderer: String,
        batch: usize,
        got: usize,
        expected: usize,
    },
    #[error(
        "renderer {renderer} returned frame {frame} as {got_width}x{got_height} ({got_bytes} bytes), \
         expected {width}x{height} RGB"
    )]
    RendererFrameSize {
        renderer: String,
        frame: u64,
        width: u32,
        height: u32,
        got_width: u32,
        got_height: u32,
        got_bytes: usize,
    },
    #[error("detail ({name}) of batch {batch}")]
    Detail {
        name: String,
        batch: usize,
        #[source]
        source: StageError,
    },
    #[error("blending the overlap of batch {batch}")]
    Blend {
        batch: usize,
        #[source]
        source: BlendError,
    },
    #[error("encode of output frame {frame}")]
    Encode {
        frame: u64,
        #[source]
        source: StageError,
    },
    #[error("finishing the output")]
    Finish {
        #[source]
        source: StageError,
    },
    #[error("{written} frames reached the output, {expected} were planned")]
    OutputFrameCount { written: u64, expected: u64 },
    #[error("cannot start the {stage} thread")]
    Spawn {
        stage: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the {stage} stage panicked: {message}")]
    Panicked {
        stage: &'static str,
        message: String,
    },
    /// A stage stopped because a neighbour failed; the neighbour's error is the one reported.
    #[error("the {stage} stage was cancelled")]
    Cancelled { stage: &'static str },
}

/// Where each stage spent its time, to check the pipeline's overhead against the render.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PipelineReport {
    pub frames: u64,
    pub output: SinkSummary,
    pub wall_secs: f64,
    pub stages: StageTimes,
}

/// Seconds each stage spent working (not waiting on its channels), and how long the render
/// thread waited. Stages run concurrently, so the busy times may add up to more than the wall
/// time; what matters is that everything but the render is small and overlaps with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageTimes {
    pub decode: f64,
    /// All preprocessors (pose, soft edge, cache reads and writes).
    pub preprocess: f64,
    /// The renderer itself (the networks and their sampling loop).
    pub render: f64,
    /// Face and hand detailing.
    pub detail: f64,
    /// Blending the overlaps of neighbouring batches.
    pub blend: f64,
    /// Writing frames, and finishing the output file.
    pub encode: f64,
    /// The render thread idle because the next input frame was not ready yet: time the
    /// upstream stages (decode, preprocess) did not hide behind the render.
    pub render_waiting_for_input: f64,
    /// The render thread blocked handing frames on because the encoder was behind.
    pub render_waiting_for_output: f64,
}

impl StageTimes {
    /// Each stage's busy time as a percentage of `wall_secs`, in pipeline order, followed by
    /// the render thread's waits.
    pub fn shares(&self, wall_secs: f64) -> Vec<(&'static str, f64)> {
        let percent = |secs: f64| {
            if wall_secs > 0.0 {
                100.0 * secs / wall_secs
            } else {
                0.0
            }
        };
        [
            ("decode", self.decode),
            ("preprocess", self.preprocess),
            ("render", self.render),
            ("detail", self.detail),
            ("blend", self.blend),
            ("encode", self.encode),
            ("render_waiting_for_input", self.render_waiting_for_input),
            ("render_waiting_for_output", self.render_waiting_for_output),
        ]
        .into_iter()
        .map(|(name, secs)| (name, percent(secs)))
        .collect()
    }

    /// One line for the end of a render: `decode 0.3 %, preprocess 2.1 %, render 96.0 %, …
    /// of 123.4 s wall; render idle waiting for input 0.5 %`.
    pub fn summary(&self, wall_secs: f64) -> String {
        let shares = self.shares(wall_secs);
        let busy: Vec<String> = shares[..6]
            .iter()
            .map(|(name, share)| format!("{name} {share:.1} %"))
            .collect();
        format!(
            "{} of {wall_secs:.1} s wall; render idle waiting for input {:.1} %",
            busy.join(", "),
            shares[6].1
        )
    }
}

/// The stages of one run. Build it, then [`Pipeline::run`] it once.
pub struct Pipeline {
    pub source: Box<dyn FrameSource>,
    pub preprocessors: Vec<Box<dyn Preprocessor>>,
    pub renderer: Box<dyn FrameRenderer>,
    pub detailers: Vec<Box<dyn Detailer>>,
    pub sink: Box<dyn FrameSink>,
    pub channel_capacity: usize,
    /// How overlapping frames of neighbouring batches are combined.
    pub blend: OverlapBlend,
}

impl Pipeline {
    /// A pipeline without preprocessors or detailers.
    pub fn new(
        source: Box<dyn FrameSource>,
        renderer: Box<dyn FrameRenderer>,
        sink: Box<dyn FrameSink>,
    ) -> Self {
        Self {
            source,
            preprocessors: Vec::new(),
            renderer,
            detailers: Vec::new(),
            sink,
            channel_capacity: DEFAULT_CHANNEL_CAPACITY,
            blend: OverlapBlend::Ramp,
        }
    }

    /// Run every stage over the frames of `plan` (the source must yield at least
    /// `plan.total_frames` frames; extra frames are not read). On success every frame has
    /// been written and the sink finished.
    pub fn run(
        self,
        plan: &BatchPlan,
        progress: Arc<dyn ProgressReporter>,
    ) -> Result<PipelineReport, PipelineError> {
        if plan.total_frames == 0 {
            return Err(PipelineError::NoFrames);
        }
        let started = Instant::now();
        let expected = plan.total_frames as u64;
        let capacity = self.channel_capacity.max(1);
        let Pipeline {
            source,
            preprocessors,
            renderer,
            detailers,
            sink,
            blend,
            ..
        } = self;
        for stage in Stage::ALL {
            progress.begin(stage, expected);
        }

        let (decoded_tx, decoded_rx) = bounded::<Frame>(capacity);
        let (prepared_tx, prepared_rx) = bounded::<PreparedFrame>(capacity);
        let (rendered_tx, rendered_rx) = bounded::<Frame>(capacity);

        let outcome = std::thread::scope(|scope| {
            let progress = progress.as_ref();
            let decode = spawn(scope, Stage::Decode, progress, move || {
                decode_stage(source, decoded_tx, expected, progress)
            });
            let preprocess = spawn(scope, Stage::Preprocess, progress, move || {
                preprocess_stage(preprocessors, decoded_rx, prepared_tx, progress)
            });
            let render = spawn(scope, Stage::Render, progress, move || {
                render_stage(
                    renderer,
                    detailers,
                    plan,
                    blend,
                    prepared_rx,
                    rendered_tx,
                    progress,
                )
            });
            let encode = spawn(scope, Stage::Encode, progress, move || {
                encode_stage(sink, rendered_rx, progress)
            });
            (
                join(Stage::Decode, decode),
                join(Stage::Preprocess, preprocess),
                join(Stage::Render, render),
                join(Stage::Encode, encode),
            )
        });
        let (decode, preprocess, render, encode) = match outcome {
            (Ok(d), Ok(p), Ok(r), Ok(e)) => (d, p, r, e),
            (d, p, r, e) => return Err(first_real_error([d.err(), p.err(), r.err(), e.err()])),
        };
        let (sink, encode_busy, written) = encode;
        let RenderTimes {
            render,
            detail,
            blend,
            waiting_for_input,
            waiting_for_output,
        } = render;
        if written != expected {
            return Err(PipelineError::OutputFrameCount { written, expected });
        }
        let finishing = Instant::now();
        let output = sink
            .finish()
            .map_err(|source| PipelineError::Finish { source })?;
        let encode_busy = encode_busy + finishing.elapsed();
        Ok(PipelineReport {
            frames: written,
            output,
            wall_secs: started.elapsed().as_secs_f64(),
            stages: StageTimes {
                decode: decode.as_secs_f64(),
                preprocess: preprocess.as_secs_f64(),
                render: render.as_secs_f64(),
                detail: detail.as_secs_f64(),
                blend: blend.as_secs_f64(),
                encode: encode_busy.as_secs_f64(),
                render_waiting_for_input: waiting_for_input.as_secs_f64(),
                render_waiting_for_output: waiting_for_output.as_secs_f64(),
            },
        })
    }
}

type StageResult<T> = Result<T, PipelineError>;
type EncodeOutcome = (Box<dyn FrameSink>, Duration, u64);

/// Where the render thread's time went.
#[derive(Default)]
struct RenderTimes {
    render: Duration,
    detail: Duration,
    blend: Duration,
    waiting_for_input: Duration,
    waiting_for_output: Duration,
}

/// The error to report when stages failed: the first in data-flow order that is not a
/// cancellation (cancellations are consequences of another stage's failure).
fn first_real_error(errors: [Option<PipelineError>; 4]) -> PipelineError {
    let mut cancellation = None;
    for err in errors.into_iter().flatten() {
        if matches!(err, PipelineError::Cancelled { .. }) {
            cancellation.get_or_insert(err);
        } else {
            return err;
        }
    }
    cancellation.unwrap_or(PipelineError::Cancelled { stage: "pipeline" })
}

fn spawn<'scope, 'env, T, F>(
    scope: &'scope Scope<'scope, 'env>,
    stage: Stage,
    progress: &'env dyn ProgressReporter,
    work: F,
) -> StageResult<ScopedJoinHandle<'scope, StageResult<T>>>
where
    T: Send + 'scope,
    F: FnOnce() -> StageResult<T> + Send + 'scope,
{
    Builder::new()
        .name(format!("rotoscope-{}", stage.as_str()))
        .spawn_scoped(scope, move || {
            let result = work();
            progress.finish(stage);
            result
        })
        .map_err(|source| PipelineError::Spawn {
            stage: stage.as_str(),
            source,
        })
}

fn join<T>(
    stage: Stage,
    handle: StageResult<ScopedJoinHandle<'_, StageResult<T>>>,
) -> StageResult<T> {
    match handle?.join() {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_string());
            Err(PipelineError::Panicked {
                stage: stage.as_str(),
                message,
            })
        }
    }
}

fn cancelled(stage: Stage) -> PipelineError {
    PipelineError::Cancelled {
        stage: stage.as_str(),
    }
}

/// Reads exactly `expected` frames from the source.
fn decode_stage(
    mut source: Box<dyn FrameSource>,
    tx: Sender<Frame>,
    expected: u64,
    progress: &dyn ProgressReporter,
) -> StageResult<Duration> {
    let mut busy = Duration::ZERO;
    for done in 0..expected {
        let started = Instant::now();
        let next = source.next_frame();
        busy += started.elapsed();
        let frame = match next {
            None => {
                return Err(PipelineError::InputEndedEarly {
                    got: done,
                    expected,
                })
            }
            Some(Err(source)) => {
                return Err(PipelineError::Decode {
                    frame: done,
                    source,
                })
            }
            Some(Ok(frame)) => frame,
        };
        tx.send(frame).map_err(|_| cancelled(Stage::Decode))?;
        progress.advance(Stage::Decode, done + 1);
    }
    Ok(busy)
}

fn preprocess_stage(
    mut preprocessors: Vec<Box<dyn Preprocessor>>,
    rx: Receiver<Frame>,
    tx: Sender<PreparedFrame>,
    progress: &dyn ProgressReporter,
) -> StageResult<Duration> {
    let mut busy = Duration::ZERO;
    let mut done = 0;
    for frame in rx {
        let started = Instant::now();
        let mut prepared = PreparedFrame::new(frame);
        for pre in preprocessors.iter_mut() {
            pre.process(&mut prepared)
                .map_err(|source| PipelineError::Preprocess {
                    name: pre.name().to_string(),
                    frame: prepared.source.index,
                    source,
                })?;
        }
        busy += started.elapsed();
        tx.send(prepared)
            .map_err(|_| cancelled(Stage::Preprocess))?;
        done += 1;
        progress.advance(Stage::Preprocess, done);
    }
    Ok(busy)
}

/// Gathers each batch, renders and details it, blends its head with the previous batch's
/// tail, and passes on every frame no later batch renders again. Output frames are numbered
/// from 0 in output order.
fn render_stage(
    mut renderer: Box<dyn FrameRenderer>,
    mut detailers: Vec<Box<dyn Detailer>>,
    plan: &BatchPlan,
    blend: OverlapBlend,
    rx: Receiver<PreparedFrame>,
    tx: Sender<Frame>,
    progress: &dyn ProgressReporter,
) -> StageResult<RenderTimes> {
    let mut times = RenderTimes::default();
    // Inputs the next batch shares with the current one, and the blended outputs so far
    // for those frames.
    let mut carried_inputs: Vec<PreparedFrame> = Vec::new();
    let mut pending_outputs: Vec<Frame> = Vec::new();
    let mut emitted = 0u64;
    for batch in &plan.batches {
        let mut inputs = std::mem::take(&mut carried_inputs);
        let waiting = Instant::now();
        while inputs.len() < batch.len() {
            inputs.push(rx.recv().map_err(|_| cancelled(Stage::Render))?);
        }
        times.waiting_for_input += waiting.elapsed();
        let started = Instant::now();
        let mut outputs = render_checked(renderer.as_mut(), batch, &inputs)?;
        times.render += started.elapsed();
        let started = Instant::now();
        for detailer in detailers.iter_mut() {
            crate::pool::on_worker(|| detailer.detail_batch(batch, &inputs, &mut outputs))
                .map_err(|source| PipelineError::Detail {
                    name: detailer.name().to_string(),
                    batch: batch.index,
                    source,
                })?;
        }
        times.detail += started.elapsed();
        let started = Instant::now();
        let overlap = batch.overlap_with_previous;
        for (position, (earlier, frame)) in pending_outputs.iter().zip(&mut outputs).enumerate() {
            *frame = blend_frames(earlier, frame, blend.weight(position, overlap)).map_err(
                |source| PipelineError::Blend {
                    batch: batch.index,
                    source,
                },
            )?;
        }
        let keep_from = batch.len() - batch.overlap_with_next;
        carried_inputs = inputs.split_off(keep_from);
        drop(inputs);
        pending_outputs = outputs.split_off(keep_from);
        times.blend += started.elapsed();
        let waiting = Instant::now();
        for mut frame in outputs {
            frame.index = emitted;
            tx.send(frame).map_err(|_| cancelled(Stage::Render))?;
            emitted += 1;
            progress.advance(Stage::Render, emitted);
        }
        times.waiting_for_output += waiting.elapsed();
    }
    Ok(times)
}

fn render_checked(
    renderer: &mut dyn FrameRenderer,
    batch: &Batch,
    inputs: &[PreparedFrame],
) -> StageResult<Vec<Frame>> {
    // On rayon's pool: the networks' hundreds of parallel loops per step then split between
    // workers directly instead of each entering the pool from this thread (see crate::pool).
    let outputs =
        crate::pool::on_worker(|| renderer.render_batch(batch, inputs)).map_err(|source| {
            PipelineError::Render {
                renderer: renderer.name().to_string(),
                batch: batch.index,
                start: batch.start,
                end: batch.end,
                source,
            }
        })?;
    if outputs.len() != inputs.len() {
        return Err(PipelineError::RendererFrameCount {
            renderer: renderer.name().to_string(),
            batch: batch.index,
            got: outputs.len(),
            expected: inputs.len(),
        });
    }
    for (input, output) in inputs.iter().zip(&outputs) {
        let (width, height) = renderer.output_size(input.source.width, input.source.height);
        if (output.width, output.height) != (width, height) || !output.is_consistent() {
            return Err(PipelineError::RendererFrameSize {
                renderer: renderer.name().to_string(),
                frame: input.source.index,
                width,
                height,
                got_width: output.width,
                got_height: output.height,
                got_bytes: output.data.len(),
            });
        }
    }
    Ok(outputs)
}

fn encode_stage(
    mut sink: Box<dyn FrameSink>,
    rx: Receiver<Frame>,
    progress: &dyn ProgressReporter,
) -> StageResult<EncodeOutcome> {
    let mut busy = Duration::ZERO;
    let mut written = 0;
    for frame in rx {
        let started = Instant::now();
        sink.write_frame(&frame)
            .map_err(|source| PipelineError::Encode {
                frame: frame.index,
                source,
            })?;
        busy += started.elapsed();
        written += 1;
        progress.advance(Stage::Encode, written);
    }
    Ok((sink, busy, written))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::plan::plan_batches;
    use crate::pipeline::progress::SilentProgress;
    use crate::render::passthrough::PassThroughRenderer;
    use std::sync::Mutex;

    /// A 2×1 frame whose every byte is `value`.
    fn frame(index: u64, value: u8) -> Frame {
        Frame::new(index, 2, 1, vec![value; 6]).unwrap()
    }

    fn source(values: Vec<u8>) -> Box<dyn FrameSource> {
        Box::new(
            values
                .into_iter()
                .enumerate()
                .map(|(i, v)| Ok::<_, std::io::Error>(frame(i as u64, v))),
        )
    }

    #[derive(Default, Clone)]
    struct Collected {
        frames: Arc<Mutex<Vec<Frame>>>,
        finished: Arc<Mutex<bool>>,
    }

    struct CollectingSink {
        out: Collected,
        fail_at: Option<u64>,
    }

    impl FrameSink for CollectingSink {
        fn write_frame(&mut self, frame: &Frame) -> Result<(), StageError> {
            if Some(frame.index) == self.fail_at {
                return Err("disk full".into());
            }
            self.out.frames.lock().unwrap().push(frame.clone());
            Ok(())
        }

        fn finish(self: Box<Self>) -> Result<SinkSummary, StageError> {
            *self.out.finished.lock().unwrap() = true;
            Ok(SinkSummary::default())
        }
    }

    fn sink(out: &Collected) -> Box<dyn FrameSink> {
        Box::new(CollectingSink {
            out: out.clone(),
            fail_at: None,
        })
    }

    fn silent() -> Arc<dyn ProgressReporter> {
        Arc::new(SilentProgress)
    }

    /// Paints every frame of batch k with the value 100·k, to make blending visible.
    struct BatchPainter;

    impl FrameRenderer for BatchPainter {
        fn name(&self) -> &str {
            "painter"
        }
        fn output_size(&self, w: u32, h: u32) -> (u32, u32) {
            (w, h)
        }
        fn render_batch(
            &mut self,
            batch: &Batch,
            frames: &[PreparedFrame],
        ) -> Result<Vec<Frame>, StageError> {
            Ok(frames
                .iter()
                .map(|f| frame(f.source.index, (100 * batch.index) as u8))
                .collect())
        }
    }

    #[test]
    fn stage_summary_gives_shares_of_the_wall_time() {
        let times = StageTimes {
            decode: 0.5,
            preprocess: 2.0,
            render: 90.0,
            detail: 4.0,
            blend: 0.3,
            encode: 1.0,
            render_waiting_for_input: 3.0,
            render_waiting_for_output: 0.0,
        };
        assert_eq!(
            times.summary(100.0),
            "decode 0.5 %, preprocess 2.0 %, render 90.0 %, detail 4.0 %, blend 0.3 %, \
             encode 1.0 % of 100.0 s wall; render idle waiting for input 3.0 %"
        );
        let shares = times.shares(50.0);
        assert_eq!(shares[2], ("render", 180.0));
        assert_eq!(shares.len(), 8);
        assert!(StageTimes::default()
            .shares(0.0)
            .iter()
            .all(|(_, p)| *p == 0.0));
    }

    #[test]
    fn pass_through_keeps_every_frame_in_order() {
        let out = Collected::default();
        let values: Vec<u8> = (0..50).collect();
        let plan = plan_batches(50, 12, 3).unwrap();
        let pipeline = Pipeline::new(
            source(values.clone()),
            Box::new(PassThroughRenderer),
            sink(&out),
        );
        let report = pipeline.run(&plan, silent()).unwrap();
        assert_eq!(report.frames, 50);
        let frames = out.frames.lock().unwrap();
        let got: Vec<u8> = frames.iter().map(|f| f.data[0]).collect();
        assert_eq!(got, values);
        let indices: Vec<u64> = frames.iter().map(|f| f.index).collect();
        assert_eq!(indices, (0..50).collect::<Vec<_>>());
        assert!(*out.finished.lock().unwrap());
    }

    #[test]
    fn overlaps_blend_with_a_linear_ramp() {
        let out = Collected::default();
        // 10 frames, batches of 6 sharing 2: [0,6) and [4,10).
        let plan = plan_batches(10, 6, 2).unwrap();
        assert_eq!(plan.batches.len(), 2);
        let pipeline = Pipeline::new(source(vec![0; 10]), Box::new(BatchPainter), sink(&out));
        pipeline.run(&plan, silent()).unwrap();
        let got: Vec<u8> = out
            .frames
            .lock()
            .unwrap()
            .iter()
            .map(|f| f.data[0])
            .collect();
        // Frames 4 and 5: 0·(2/3) + 100·(1/3) = 33, 0·(1/3) + 100·(2/3) = 67.
        assert_eq!(got, vec![0, 0, 0, 0, 33, 67, 100, 100, 100, 100]);
    }

    #[test]
    fn cut_blend_takes_the_later_batch() {
        let out = Collected::default();
        // Batches [0,6) and [4,10) share frames 4 and 5: batch 1 renders them.
        let plan = plan_batches(10, 6, 2).unwrap();
        assert_eq!(plan.batches[1].start, 4);
        let mut pipeline = Pipeline::new(source(vec![0; 10]), Box::new(BatchPainter), sink(&out));
        pipeline.blend = OverlapBlend::Cut;
        pipeline.run(&plan, silent()).unwrap();
        let got: Vec<u8> = out
            .frames
            .lock()
            .unwrap()
            .iter()
            .map(|f| f.data[0])
            .collect();
        assert_eq!(got, vec![0, 0, 0, 0, 100, 100, 100, 100, 100, 100]);
    }

    #[test]
    fn frames_in_three_batches_blend_in_sequence() {
        let out = Collected::default();
        // Batches [0,3) [1,4) [2,5) [3,6): frame 2 is rendered by batches 0, 1 and 2.
        let plan = plan_batches(6, 3, 2).unwrap();
        let pipeline = Pipeline::new(source(vec![0; 6]), Box::new(BatchPainter), sink(&out));
        pipeline.run(&plan, silent()).unwrap();
        let got: Vec<u8> = out
            .frames
            .lock()
            .unwrap()
            .iter()
            .map(|f| f.data[0])
            .collect();
        // frame 1: blend(0, 100, 1/3) = 33
        // frame 2: blend(blend(0, 100, 2/3) = 67, 200, 1/3) = 111
        // frame 3: blend(blend(100, 200, 2/3) = 167, 300 as u8 = 44, 1/3) = 126
        assert_eq!(got[..3], [0, 33, 111]);
        assert_eq!(got[3], 126);
        assert_eq!(got.len(), 6);
    }

    #[test]
    fn source_error_is_reported_and_output_not_finished() {
        #[derive(Debug, thiserror::Error)]
        #[error("bad packet")]
        struct Broken;
        let out = Collected::default();
        let frames = (0..30u64).map(|i| if i < 20 { Ok(frame(i, 1)) } else { Err(Broken) });
        let plan = plan_batches(30, 8, 2).unwrap();
        let err = Pipeline::new(Box::new(frames), Box::new(PassThroughRenderer), sink(&out))
            .run(&plan, silent())
            .unwrap_err();
        match &err {
            PipelineError::Decode { frame, source } => {
                assert_eq!(*frame, 20);
                assert!(source.downcast_ref::<Broken>().is_some());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!*out.finished.lock().unwrap());
    }

    #[test]
    fn short_input_is_reported() {
        let out = Collected::default();
        let plan = plan_batches(30, 8, 2).unwrap();
        let err = Pipeline::new(
            source(vec![1; 25]),
            Box::new(PassThroughRenderer),
            sink(&out),
        )
        .run(&plan, silent())
        .unwrap_err();
        assert!(
            matches!(
                err,
                PipelineError::InputEndedEarly {
                    got: 25,
                    expected: 30
                }
            ),
            "{err:?}"
        );
        assert!(!*out.finished.lock().unwrap());
    }

    #[test]
    fn sink_error_stops_every_stage() {
        let out = Collected::default();
        let plan = plan_batches(500, 16, 4).unwrap();
        let failing = Box::new(CollectingSink {
            out: out.clone(),
            fail_at: Some(40),
        });
        let err = Pipeline::new(source(vec![9; 500]), Box::new(PassThroughRenderer), failing)
            .run(&plan, silent())
            .unwrap_err();
        assert!(
            matches!(err, PipelineError::Encode { frame: 40, .. }),
            "{err:?}"
        );
        assert_eq!(out.frames.lock().unwrap().len(), 40);
    }

    #[test]
    fn renderer_contract_is_enforced() {
        struct Dropper;
        impl FrameRenderer for Dropper {
            fn name(&self) -> &str {
                "dropper"
            }
            fn output_size(&self, w: u32, h: u32) -> (u32, u32) {
                (w, h)
            }
            fn render_batch(
                &mut self,
                _: &Batch,
                f: &[PreparedFrame],
            ) -> Result<Vec<Frame>, StageError> {
                Ok(f[1..].iter().map(|p| p.source.clone()).collect())
            }
        }
        let plan = plan_batches(10, 5, 1).unwrap();
        let err = Pipeline::new(
            source(vec![0; 10]),
            Box::new(Dropper),
            sink(&Collected::default()),
        )
        .run(&plan, silent())
        .unwrap_err();
        assert!(
            matches!(
                err,
                PipelineError::RendererFrameCount {
                    got: 3,
                    expected: 4,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn renderer_panic_becomes_an_error() {
        struct Panicker;
        impl FrameRenderer for Panicker {
            fn name(&self) -> &str {
                "panicker"
            }
            fn output_size(&self, w: u32, h: u32) -> (u32, u32) {
                (w, h)
            }
            fn render_batch(
                &mut self,
                _: &Batch,
                _: &[PreparedFrame],
            ) -> Result<Vec<Frame>, StageError> {
                panic!("boom")
            }
        }
        let plan = plan_batches(10, 5, 1).unwrap();
        let err = Pipeline::new(
            source(vec![0; 10]),
            Box::new(Panicker),
            sink(&Collected::default()),
        )
        .run(&plan, silent())
        .unwrap_err();
        assert!(
            matches!(&err, PipelineError::Panicked { stage: "render", message } if message == "boom"),
            "{err:?}"
        );
    }

    #[test]
    fn preprocessors_and_detailers_see_every_frame() {
        use crate::pipeline::stages::ControlImage;
        use crate::preset::ControlKind;

        struct Inverter;
        impl Preprocessor for Inverter {
            fn name(&self) -> &str {
                "inverter"
            }
            fn process(&mut self, frame: &mut PreparedFrame) -> Result<(), StageError> {
                let mut image = frame.source.clone();
                image.data.iter_mut().for_each(|v| *v = 255 - *v);
                frame.controls.push(ControlImage {
                    kind: ControlKind::Softedge,
                    image,
                });
                frame.annotations.insert(frame.source.index * 10);
                Ok(())
            }
        }
        /// Renders the control image instead of the source.
        struct ControlRenderer;
        impl FrameRenderer for ControlRenderer {
            fn name(&self) -> &str {
                "control"
            }
            fn output_size(&self, w: u32, h: u32) -> (u32, u32) {
                (w, h)
            }
            fn render_batch(
                &mut self,
                _: &Batch,
                f: &[PreparedFrame],
            ) -> Result<Vec<Frame>, StageError> {
                Ok(f.iter()
                    .map(|p| p.control(ControlKind::Softedge).unwrap().clone())
                    .collect())
            }
        }
        /// Checks the annotation travelled with its frame.
        struct Checker(Arc<Mutex<u64>>);
        impl Detailer for Checker {
            fn name(&self) -> &str {
                "checker"
            }
            fn detail_batch(
                &mut self,
                _: &Batch,
                inputs: &[PreparedFrame],
                outputs: &mut [Frame],
            ) -> Result<(), StageError> {
                for (i, o) in inputs.iter().zip(outputs.iter()) {
                    assert_eq!(i.annotations.get::<u64>(), Some(&(i.source.index * 10)));
                    assert_eq!(o.index, i.source.index);
                }
                *self.0.lock().unwrap() += inputs.len() as u64;
                Ok(())
            }
        }
        let out = Collected::default();
        let seen = Arc::new(Mutex::new(0));
        let plan = plan_batches(20, 8, 2).unwrap();
        let mut pipeline = Pipeline::new(
            source((0..20).collect()),
            Box::new(ControlRenderer),
            sink(&out),
        );
        pipeline.preprocessors.push(Box::new(Inverter));
        pipeline.detailers.push(Box::new(Checker(seen.clone())));
        pipeline.run(&plan, silent()).unwrap();
        let got: Vec<u8> = out
            .frames
            .lock()
            .unwrap()
            .iter()
            .map(|f| f.data[0])
            .collect();
        assert_eq!(got, (0..20).map(|v| 255 - v).collect::<Vec<u8>>());
        assert_eq!(*seen.lock().unwrap() as usize, plan.rendered_frames());
    }

    #[test]
    fn empty_plan_is_rejected() {
        let plan = plan_batches(0, 8, 2).unwrap();
        let err = Pipeline::new(
            source(vec![]),
            Box::new(PassThroughRenderer),
            sink(&Collected::default()),
        )
        .run(&plan, silent())
        .unwrap_err();
        assert!(matches!(err, PipelineError::NoFrames));
    }
}
