//! One render job: an input, a preset (with its overrides applied), an output and how to
//! resume. `rotoscope render` runs one; `rotoscope batch` runs many on a shared
//! [`ModelCache`], so jobs on the same models load them once.
//!
//! Before any frame is preprocessed, a job that has batches left to render checks that every
//! model file is there (hub ids are downloaded now when online). When files are missing
//! (offline, nothing in the Hugging Face cache), the job still runs the preprocessing with
//! the packaged pose / soft-edge weights into `<work dir>/preprocess/` (the `rotoscope
//! preprocess` layout and cache; the next run of the job takes the maps from there) and then
//! stops with the list of missing files and how to get them ([`ModelsMissing`], exit code 2).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::app::args::OutputTarget;
use crate::app::detail_stage::SharedModelDetailer;
use crate::app::error::JobInputError;
use crate::app::events::start_event;
use crate::app::io::{check_output, create_sink, open_input};
use crate::app::job::{JobInterrupted, JobOutcome, ModelsMissing, RenderJob, Reporting};
use crate::app::map_cache::{cached_preprocessors, preprocess_into_cache, PREPROCESS_CACHE_DIR};
use crate::app::renderer::{is_test_model, renderer_factory, AnchorInput};
use crate::app::resolve::{read_options, JobSettings};
use crate::cancel::{is_interrupted, StopFlag};
use crate::detail::check_preset as check_detail_preset;
use crate::loaders::model_cache::ModelCache;
use crate::loaders::sd_models::ModelWeights;
use crate::loaders::source::HubOptions;
use crate::pipeline::plan::{plan_for_preset, BatchPlan};
use crate::pipeline::resume::{
    Notifier, OpenReport, RendererFactory, ResumableRenderer, RunIdentity, WorkDir, WORK_FORMAT,
};
use crate::pipeline::runner::{Pipeline, PipelineReport};
use crate::pipeline::stages::{FrameSink, Preprocessor};
use crate::preprocess::cache::fingerprint_file;
use crate::preprocess::models_dir;
use crate::preprocess::registry::{build_preprocessors, maps_for, PreprocessorOptions};
use crate::preset::{ControlKind, PresetError};
use crate::render::sd_renderer::RENDERER_NAME;
use crate::render::shared_models::SharedModels;
use crate::video::{ReadOptions, VideoInfo, VideoReader};

/// Run `job`: probe, plan, preprocess, render (resuming from its work directory), detail,
/// encode. Models come from `models` (loaded there on first use, on its device). Errors of
/// the job are returned, including [`JobInterrupted`] after Ctrl-C (`stop`) and
/// [`ModelsMissing`].
pub fn run_render_job(
    job: &RenderJob,
    models: &Arc<ModelCache>,
    reporting: &Reporting,
    stop: &StopFlag,
) -> anyhow::Result<JobOutcome> {
    let input = open_job_input(job)?;
    let work_root = job.work_root();
    let input_fingerprint = fingerprint_file(&job.input)?;
    let (work, opened) = open_work_dir(job, &input, &work_root, &input_fingerprint)?;
    if let Some(line) = opened.describe(&work_root) {
        reporting.note(&line);
    }
    let shared = Arc::new(SharedModels::with_cache(
        input.settings.sd.clone(),
        HubOptions::from_env(reporting.hub_progress),
        models.clone(),
    ));
    let plan = input.plan.clone();
    let run = JobRun {
        job,
        reporting,
        stop,
        shared: &shared,
        work: &work,
        work_root: &work_root,
        input_fingerprint: &input_fingerprint,
        resuming: opened.reusable > 0,
    };
    let report = match run.render(input) {
        Ok(report) => report,
        Err(err) => {
            clean_up_after_failure(&work, &work_root, &plan);
            return Err(err);
        }
    };
    clean_up_after_success(&work, &work_root)?;
    let test_weights = shared.is_loaded()
        && shared
            .get()
            .is_ok_and(|models| is_test_model(models.unet_channels()));
    Ok(JobOutcome {
        report,
        reused_batches: opened.reusable,
        test_weights,
    })
}

/// The job's input opened, its batches planned and its preset resolved for it.
struct JobInput {
    reader: VideoReader,
    options: ReadOptions,
    info: VideoInfo,
    target: OutputTarget,
    plan: BatchPlan,
    settings: JobSettings,
}

/// Step 1: open the input, check the output, plan the batches and resolve the preset;
/// everything a preset cannot serve for this input fails here, before any work.
fn open_job_input(job: &RenderJob) -> anyhow::Result<JobInput> {
    let preset = &job.preset;
    // Input first: a wrong input is the more fundamental mistake to report.
    let options = read_options(preset);
    let (reader, clip_frames) = open_input(&job.input, &options, job.frames)?;
    let info = reader.info().clone();
    let target = OutputTarget::from_arg(&job.output);
    check_output(&target, &job.input, job.force)?;
    let plan = plan_for_preset(info.frame_count as usize, preset)
        .with_context(|| format!("planning batches for {}", job.preset_origin))?;
    let settings = JobSettings::resolve(preset, job.preset_dir.as_deref(), &info);
    if settings.sd.needs_anchor() && settings.anchor_index >= clip_frames {
        return Err(PresetError::Invalid {
            origin: job.preset_origin.clone(),
            field: "temporal.anchor".into(),
            message: format!(
                "frame {} is past the end of {} ({clip_frames} frames)",
                settings.anchor_index,
                job.input.display()
            ),
        }
        .into());
    }
    // A detail section the rest of the preset cannot serve fails before any work starts.
    check_detail_preset(preset)?;
    Ok(JobInput {
        reader,
        options,
        info,
        target,
        plan,
        settings,
    })
}

/// Step 2: the work directory for finished batches, next to the output: where it cannot be
/// made, the output cannot be written either.
fn open_work_dir(
    job: &RenderJob,
    input: &JobInput,
    work_root: &Path,
    input_fingerprint: &str,
) -> anyhow::Result<(WorkDir, OpenReport)> {
    let info = &input.info;
    let (width, height) = input.settings.size;
    let run_identity = RunIdentity {
        format: WORK_FORMAT,
        renderer: format!("{RENDERER_NAME} rotoscope {}", env!("CARGO_PKG_VERSION")),
        preset_fingerprint: job.preset.fingerprint(),
        input: input_fingerprint.to_string(),
        first_frame: info.start_frame,
        frame_count: info.frame_count,
        fps: info.fps.to_string(),
        width,
        height,
        seed: input.settings.sampling.seed,
    };
    WorkDir::open(work_root, run_identity, &job.input, job.resume).map_err(|e| {
        JobInputError::OutputUnwritable {
            path: work_root.to_path_buf(),
            reason: format!("its work directory: {e}"),
        }
        .into()
    })
}

/// What the steps of one render share.
struct JobRun<'a> {
    job: &'a RenderJob,
    reporting: &'a Reporting,
    stop: &'a StopFlag,
    shared: &'a Arc<SharedModels>,
    work: &'a WorkDir,
    work_root: &'a Path,
    input_fingerprint: &'a str,
    /// A resumed render replaces the frames its interrupted run already wrote to a PNG
    /// sequence (they come from the same work directory); anything else needs --force.
    resuming: bool,
}

/// The preprocessing a job needs.
struct Preprocessing {
    options: PreprocessorOptions,
    /// The maps the ControlNets and the detailer need.
    maps: Vec<ControlKind>,
    /// Whether any batch is left to render or detail (else no model is needed).
    needs_models: bool,
}

impl JobRun<'_> {
    /// Steps 3 to 6: the preprocessors, the models (or the offline fallback), the renderer,
    /// the pipeline.
    fn render(&self, input: JobInput) -> anyhow::Result<PipelineReport> {
        let preprocessing = self.preprocessing(&input);
        // Before the models are checked: an output that must not be written is the first
        // thing to report.
        let sink = create_sink(
            &input.target,
            self.job,
            &input.info,
            input.settings.size,
            self.resuming,
        )?;
        let JobInput {
            reader,
            options,
            info,
            plan,
            settings,
            ..
        } = input;
        let reader = self.check_models(reader, &plan, &preprocessing)?;
        let preprocessors = self.preprocessors(&preprocessing)?;
        let notify: Notifier = {
            let reporting = self.reporting.clone();
            Arc::new(move |text: &str| reporting.note(text))
        };
        let factory = self.renderer_factory(&options, &info, &settings, &preprocessing, &notify);
        self.run_pipeline(
            reader,
            preprocessors,
            factory,
            sink,
            &info,
            &plan,
            &settings,
            notify,
        )
    }

    /// Step 3: the preprocessors' options and the maps the job needs.
    fn preprocessing(&self, input: &JobInput) -> Preprocessing {
        let preset = &self.job.preset;
        let info = &input.info;
        let unfinished: Vec<_> = input
            .plan
            .batches
            .iter()
            .filter(|b| !self.work.is_finished(b))
            .map(|b| info.start_frame + b.start as u64..info.start_frame + b.end as u64)
            .collect();
        let needs_models = !unfinished.is_empty() || preset.detail.any_enabled();
        let options = PreprocessorOptions {
            pose_json: self.job.pose_json.clone(),
            needed: Some(unfinished),
            stop: self.stop.clone(),
            ..PreprocessorOptions::for_preset(preset, models_dir(), info.fps.as_f64())
        };
        let maps = maps_for(input.settings.sd.required_maps(), preset);
        Preprocessing {
            options,
            maps,
            needs_models,
        }
    }

    /// Maps kept by an earlier run that stopped for missing models.
    fn kept_maps_dir(&self) -> PathBuf {
        self.work_root.join(PREPROCESS_CACHE_DIR)
    }

    fn kept_preprocessors(
        &self,
        preprocessing: &Preprocessing,
    ) -> anyhow::Result<Vec<Box<dyn Preprocessor>>> {
        cached_preprocessors(
            &preprocessing.maps,
            &preprocessing.options,
            self.input_fingerprint,
            &self.kept_maps_dir(),
        )
    }

    /// Step 4: every model file there (or downloaded) before the long work starts; if not,
    /// do the preprocessing that needs no SD weights, keep it, and fail with what is missing
    /// ([`ModelsMissing`]). Gives the reader back when the models are there.
    fn check_models(
        &self,
        reader: VideoReader,
        plan: &BatchPlan,
        preprocessing: &Preprocessing,
    ) -> anyhow::Result<VideoReader> {
        let shared = self.shared;
        if !preprocessing.needs_models || shared.weights_cached() {
            return Ok(reader);
        }
        let Err(missing) =
            ModelWeights::check_available(&shared.config().model_key(), shared.hub())
        else {
            return Ok(reader);
        };
        // Without the preprocessor weights too, the missing SD files still lead.
        let (preprocessed, preprocess_problem) = match self.kept_preprocessors(preprocessing) {
            Ok(preprocessors) => (
                preprocess_into_cache(
                    reader,
                    preprocessors,
                    self.reporting.progress().as_ref(),
                    self.stop,
                )
                .map_err(|err| {
                    if self.stop.is_requested() {
                        JobInterrupted {
                            kept: 0,
                            total: plan.batches.len(),
                            work_dir: self.work_root.to_path_buf(),
                        }
                        .into()
                    } else {
                        err
                    }
                })?,
                None,
            ),
            Err(err) => (0, Some(format!("{err:#}"))),
        };
        Err(ModelsMissing {
            missing,
            preprocessed,
            preprocess_problem,
            cache_dir: self.kept_maps_dir(),
            preset: self.job.preset_origin.clone(),
        }
        .into())
    }

    /// Step 5: the preprocessors. Finished batches need no maps; pose tracking still sees
    /// every frame (see `preprocessors`), so only a render with nothing left to render or
    /// detail skips preprocessing entirely. Maps kept by an earlier run are used, not redone.
    fn preprocessors(
        &self,
        preprocessing: &Preprocessing,
    ) -> anyhow::Result<Vec<Box<dyn Preprocessor>>> {
        let kept_maps = self.kept_maps_dir();
        Ok(if !preprocessing.needs_models {
            Vec::new()
        } else if kept_maps.is_dir() {
            self.reporting.note(&format!(
                "using the pose / soft-edge maps kept in {}",
                kept_maps.display()
            ));
            self.kept_preprocessors(preprocessing)?
        } else {
            build_preprocessors(&preprocessing.maps, &preprocessing.options)?
        })
    }

    /// Step 6: the renderer, built on the render thread when a batch needs it: the SD
    /// renderer (with its anchor), or AnimateDiff's joint batches with a motion module.
    fn renderer_factory(
        &self,
        options: &ReadOptions,
        info: &VideoInfo,
        settings: &JobSettings,
        preprocessing: &Preprocessing,
        notify: &Notifier,
    ) -> RendererFactory {
        let shared = self.shared;
        // AnimateDiff renders each batch jointly instead (render/motion/batch_renderer.rs).
        match self.job.preset.temporal.motion_module.clone() {
            Some(motion) => crate::render::motion::motion_renderer_factory(
                shared.clone(),
                motion,
                self.job.preset_dir.as_deref(),
                shared.hub().clone(),
                notify.clone(),
            ),
            None => renderer_factory(
                shared.clone(),
                AnchorInput {
                    path: self.job.input.clone(),
                    options: options.clone(),
                    index: settings.anchor_index,
                    first_frame: info.start_frame,
                    preprocess: PreprocessorOptions {
                        needed: None,
                        ..preprocessing.options.clone()
                    },
                    maps: preprocessing.maps.clone(),
                },
                notify.clone(),
            ),
        }
    }

    /// Step 7: the pipeline from decode to encode, with the detailer; Ctrl-C becomes
    /// [`JobInterrupted`].
    #[allow(clippy::too_many_arguments)]
    fn run_pipeline(
        &self,
        reader: VideoReader,
        preprocessors: Vec<Box<dyn Preprocessor>>,
        factory: RendererFactory,
        sink: Box<dyn FrameSink>,
        info: &VideoInfo,
        plan: &BatchPlan,
        settings: &JobSettings,
        notify: Notifier,
    ) -> anyhow::Result<PipelineReport> {
        let (job, work, stop) = (self.job, self.work, self.stop);
        let renderer = ResumableRenderer::new(
            RENDERER_NAME,
            settings.size,
            work.clone(),
            factory,
            stop.clone(),
            notify.clone(),
        );
        if let Some(json) = self.reporting.json_out() {
            json.emit(&start_event(
                job,
                info,
                plan,
                RENDERER_NAME,
                settings.size,
                settings.sampling.seed,
            ));
        }
        let mut pipeline = Pipeline::new(Box::new(reader), Box::new(renderer), sink);
        pipeline.preprocessors = preprocessors;
        if let Some(detailer) = SharedModelDetailer::new(
            self.shared.clone(),
            &job.preset,
            info.fps.as_f64(),
            work.clone(),
            stop.clone(),
            notify,
            self.reporting.json_out().cloned(),
        )? {
            pipeline.detailers.push(Box::new(detailer));
        }
        pipeline.blend = job.preset.batch.blend;
        match pipeline.run(plan, self.reporting.progress()) {
            Ok(report) => Ok(report),
            Err(err) if is_interrupted(&err) => Err(JobInterrupted {
                kept: plan.batches.iter().filter(|b| work.is_finished(b)).count(),
                total: plan.batches.len(),
                work_dir: work.root().to_path_buf(),
            }
            .into()),
            Err(err) => Err(err).with_context(|| format!("rendering {}", job.input.display())),
        }
    }
}

/// A failed job: with nothing worth resuming, leave no empty work directory behind.
fn clean_up_after_failure(work: &WorkDir, work_root: &Path, plan: &BatchPlan) {
    let kept_maps = work_root.join(PREPROCESS_CACHE_DIR).is_dir();
    if !kept_maps && !plan.batches.iter().any(|b| work.is_finished(b)) {
        let _ = work.remove();
    }
}

/// A finished job: its work directory goes, with the maps of an earlier run that stopped
/// for missing models (the render is complete).
fn clean_up_after_success(work: &WorkDir, work_root: &Path) -> anyhow::Result<()> {
    work.remove()?;
    let maps = work_root.join(PREPROCESS_CACHE_DIR);
    if maps.is_dir() {
        let _ = std::fs::remove_dir_all(&maps);
        let _ = std::fs::remove_dir(work_root);
    }
    Ok(())
}
