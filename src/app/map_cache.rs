//! Pose and soft-edge maps kept on disk for a render whose SD models are missing: offline
//! (empty Hugging Face cache), the maps are still made with the packaged preprocessor weights
//! into `<work dir>/preprocess/`, in the `rotoscope preprocess` layout and cache
//! (`pose_000123.png` + `pose_000123_keypoints.json`, `softedge_000123.png`, one manifest per
//! stage keyed by the input's fingerprint and the settings; see [`crate::preprocess::cache`]).
//! A later run of the same render, offline or with the models, takes the maps from there
//! instead of computing them again; the folder goes with the work directory once the output
//! is complete.

use std::path::Path;

use anyhow::Context;

use crate::cancel::StopFlag;
use crate::pipeline::progress::{ProgressReporter, Stage};
use crate::pipeline::stages::{PreparedFrame, Preprocessor};
use crate::preprocess::registry::{build_cached_preprocessors, CacheTarget, PreprocessorOptions};
use crate::preset::ControlKind;
use crate::video::VideoReader;

/// The cache's folder inside a render's work directory.
pub const PREPROCESS_CACHE_DIR: &str = "preprocess";

/// Preprocessors for `maps` that read and fill the cache in `dir` (poses from
/// `options.pose_json` are read from there as usual). Empty when no map needs a model.
pub fn cached_preprocessors(
    maps: &[ControlKind],
    options: &PreprocessorOptions,
    input_fingerprint: &str,
    dir: &Path,
) -> anyhow::Result<Vec<Box<dyn Preprocessor>>> {
    let target = CacheTarget {
        dir: dir.to_path_buf(),
        input_fingerprint: input_fingerprint.to_string(),
    };
    Ok(build_cached_preprocessors(maps, options, &target)?)
}

/// Run the cached `preprocessors` over every frame of `reader` (filling the cache), without
/// rendering. Returns the number of frames; stops between frames when `stop` is set (the
/// error is [`crate::cancel::Interrupted`]).
pub fn preprocess_into_cache(
    reader: VideoReader,
    mut preprocessors: Vec<Box<dyn Preprocessor>>,
    progress: &dyn ProgressReporter,
    stop: &StopFlag,
) -> anyhow::Result<u64> {
    if preprocessors.is_empty() {
        return Ok(0);
    }
    progress.begin(Stage::Preprocess, reader.info().frame_count);
    let mut done = 0;
    for frame in reader {
        stop.check()?;
        let mut prepared = PreparedFrame::new(frame?);
        for p in &mut preprocessors {
            let index = prepared.source.index;
            p.process(&mut prepared)
                .map_err(|e| anyhow::anyhow!(e))
                .with_context(|| format!("{} of frame {index}", p.name()))?;
        }
        done += 1;
        progress.advance(Stage::Preprocess, done);
    }
    progress.finish(Stage::Preprocess);
    Ok(done)
}
