//! Soft edges as a pipeline stage: the HED map of each needed frame (controlnet_aux's
//! `HEDdetector`, at the source frame's size), through the on-disk cache when one is given.
//! [`SOFTEDGE`] is its entry in the preprocessor registry ([`crate::preprocess::registry`]).

use std::io::Cursor;

use crate::pipeline::stages::{ControlImage, PreparedFrame, Preprocessor, StageError};
use crate::preprocess::cache::{fingerprint_file, StageCache};
use crate::preprocess::map_stage::{
    source_image, CacheTarget, MapPreprocessor, PreprocessorError, PreprocessorOptions,
};
use crate::preprocess::softedge::softedge::HED_WEIGHTS;
use crate::preprocess::softedge::{to_control_image, SoftEdge, SoftEdgeSettings};
use crate::preset::ControlKind;
use crate::video::Frame;

/// Cache stage name: files `softedge_000123.png`.
pub const STAGE: &str = "softedge";
pub const MAP_SUFFIX: &str = ".png";

/// The softedge map's entry in the preprocessor registry.
pub const SOFTEDGE: MapPreprocessor = MapPreprocessor {
    kind: ControlKind::Softedge,
    section: "preprocess.softedge",
    models_subdir: "",
    model_files: |_| vec![HED_WEIGHTS],
    build,
};

fn build(
    options: &PreprocessorOptions,
    cache: Option<&CacheTarget>,
) -> Result<Box<dyn Preprocessor>, PreprocessorError> {
    let settings = SoftEdgeSettings {
        safe: options.softedge.safe,
        ..SoftEdgeSettings::default()
    };
    let model = SoftEdge::new(&options.models_dir, &settings)?;
    let cache = match cache {
        Some(target) => {
            let weights = fingerprint_file(&options.models_dir.join(HED_WEIGHTS))?;
            let key = format!("{settings:?}|hed={weights}");
            Some(target.open(STAGE, &[MAP_SUFFIX], &key)?)
        }
        None => None,
    };
    Ok(Box::new(SoftEdgeStage {
        model,
        cache,
        options: options.clone(),
    }))
}

/// HED soft edges of the frames `options.needed` asks for: read from the cache when there,
/// else computed (and written to the cache when there is one).
struct SoftEdgeStage {
    model: SoftEdge,
    cache: Option<StageCache>,
    options: PreprocessorOptions,
}

impl SoftEdgeStage {
    fn map(&self, frame: &Frame) -> Result<image::RgbImage, PreprocessorError> {
        let index = frame.index;
        if let Some(cache) = self.cache.as_ref().filter(|c| c.is_done(index)) {
            let path = cache.path(index, MAP_SUFFIX);
            return image::open(&path)
                .map(|m| m.to_rgb8())
                .map_err(|e| PreprocessorError::Frame {
                    frame: index,
                    what: "reading the kept soft-edge map",
                    source: format!("{}: {e}", path.display()).into(),
                });
        }
        let image = source_image(frame)?;
        let edges = self
            .model
            .detect(&image, image.width(), image.height())
            .map_err(|e| PreprocessorError::Frame {
                frame: index,
                what: "soft edges",
                source: Box::new(e),
            })?;
        let map = to_control_image(&edges);
        if let Some(cache) = &self.cache {
            let mut png = Vec::new();
            map.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
                .map_err(|e| PreprocessorError::Frame {
                    frame: index,
                    what: "encoding the soft-edge map",
                    source: Box::new(e),
                })?;
            cache.write(index, MAP_SUFFIX, &png)?;
        }
        Ok(map)
    }
}

impl Preprocessor for SoftEdgeStage {
    fn name(&self) -> &str {
        STAGE
    }

    fn process(&mut self, frame: &mut PreparedFrame) -> Result<(), StageError> {
        let index = frame.source.index;
        if !self.options.needs(index) {
            return Ok(());
        }
        let map = self.map(&frame.source)?;
        frame.controls.push(ControlImage {
            kind: ControlKind::Softedge,
            image: Frame::from_rgb_image(index, map),
        });
        Ok(())
    }

    fn is_done(&self, index: u64) -> bool {
        self.cache.as_ref().is_some_and(|c| c.is_done(index))
    }
}
