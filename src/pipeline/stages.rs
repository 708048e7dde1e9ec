//! The pieces the render pipeline is assembled from, and the traits later work plugs into:
//!
//! ```text
//! FrameSource ─► Preprocessor* ─► FrameRenderer (per batch) ─► Detailer* ─► blend ─► FrameSink
//!  (decode)        (pose, edges)     (SD, pass-through)        (faces, hands)        (encode)
//! ```
//!
//! Frames travel as u8 RGB ([`Frame`]); what preprocessors find about a frame travels with it
//! in a [`PreparedFrame`]: control images for the ControlNets, and typed annotations (e.g.
//! pose keypoints) that detailers read back.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::pipeline::plan::Batch;
use crate::preset::ControlKind;
use crate::video::Frame;

/// Any error a stage implementation reports. Keep the concrete error type (a `thiserror`
/// enum naming file / frame): the CLI inspects it to pick the exit code.
pub type StageError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Where decoded frames come from, in order.
pub trait FrameSource: Send {
    /// The next frame, `None` at the end of the input.
    fn next_frame(&mut self) -> Option<Result<Frame, StageError>>;
}

/// Any iterator of frames is a source (e.g. `video::VideoReader`).
impl<I, E> FrameSource for I
where
    I: Iterator<Item = Result<Frame, E>> + Send,
    E: std::error::Error + Send + Sync + 'static,
{
    fn next_frame(&mut self) -> Option<Result<Frame, StageError>> {
        self.next()
            .map(|r| r.map_err(|e| Box::new(e) as StageError))
    }
}

/// Per-frame analysis of the source (pose estimation, soft edges, ...). Called on every
/// frame in order, so an implementation may track state from frame to frame.
pub trait Preprocessor: Send {
    /// Short name for progress and errors (`"pose"`).
    fn name(&self) -> &str;
    /// Add control images and/or annotations to `frame`; never change `frame.source`.
    fn process(&mut self, frame: &mut PreparedFrame) -> Result<(), StageError>;
    /// Whether frame `index`'s output is already kept on disk by an earlier run (a cached
    /// preprocessor), so `rotoscope preprocess` need not run it. Without a cache: never.
    fn is_done(&self, _index: u64) -> bool {
        false
    }
    /// Named counts of the work done so far, for reports (`pose_person_detections`, ...).
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// Turns a batch of prepared frames into styled frames.
pub trait FrameRenderer: Send {
    /// Short name for progress and the JSON start event (`"passthrough"`, `"sd15"`).
    fn name(&self) -> &str;
    /// The size of the frames it produces for input frames of the given size.
    fn output_size(&self, input_width: u32, input_height: u32) -> (u32, u32);
    /// Render every frame of `batch`. `frames[i]` is frame `batch.start + i` of the plan;
    /// the first `batch.overlap_with_previous` frames were also in the previous batch (the
    /// pipeline blends both renderings). Returns exactly one frame per input, in order, each
    /// of `output_size`, with `index` equal to its input's `source.index`.
    fn render_batch(
        &mut self,
        batch: &Batch,
        frames: &[PreparedFrame],
    ) -> Result<Vec<Frame>, StageError>;
}

/// Post-render touch-ups of a batch (face and hand detailing), before overlaps are blended.
pub trait Detailer: Send {
    fn name(&self) -> &str;
    /// Improve `outputs` in place; `inputs[i]` is the prepared frame `outputs[i]` came from.
    fn detail_batch(
        &mut self,
        batch: &Batch,
        inputs: &[PreparedFrame],
        outputs: &mut [Frame],
    ) -> Result<(), StageError>;
}

/// Where finished frames go (an MP4 encoder, a PNG sequence). `finish` makes the output
/// appear at its final path; a sink dropped without `finish` leaves no finished-looking
/// output behind.
pub trait FrameSink: Send {
    fn write_frame(&mut self, frame: &Frame) -> Result<(), StageError>;
    fn finish(self: Box<Self>) -> Result<SinkSummary, StageError>;
}

/// What a sink produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SinkSummary {
    pub path: std::path::PathBuf,
    pub frames: u64,
    /// One human-readable line: format, size, audio.
    pub detail: String,
}

/// A control image for one ControlNet, at the source frame's size (the renderer resizes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlImage {
    pub kind: ControlKind,
    pub image: Frame,
}

/// A source frame with everything preprocessing found out about it.
#[derive(Clone, Debug)]
pub struct PreparedFrame {
    pub source: Frame,
    pub controls: Vec<ControlImage>,
    pub annotations: Annotations,
}

impl PreparedFrame {
    pub fn new(source: Frame) -> Self {
        Self {
            source,
            controls: Vec::new(),
            annotations: Annotations::default(),
        }
    }

    /// The control image of `kind`, if a preprocessor made one.
    pub fn control(&self, kind: ControlKind) -> Option<&Frame> {
        self.controls
            .iter()
            .find(|c| c.kind == kind)
            .map(|c| &c.image)
    }
}

/// Typed per-frame data keyed by type: a preprocessor stores e.g. its `PoseKeypoints`, a
/// detailer reads them back, without this module knowing either type. Values are shared
/// (`Arc`), so cloning a frame for the batch overlap is cheap.
#[derive(Clone, Default)]
pub struct Annotations {
    values: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl Annotations {
    /// Store `value`, replacing any earlier value of the same type.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), Arc::new(value));
    }

    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl fmt::Debug for Annotations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Annotations({} values)", self.values.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Keypoints(Vec<(f32, f32)>);

    #[test]
    fn annotations_are_typed_and_shared_on_clone() {
        let mut a = Annotations::default();
        assert!(a.get::<Keypoints>().is_none());
        a.insert(Keypoints(vec![(1.0, 2.0)]));
        a.insert(7u32);
        let b = a.clone();
        assert_eq!(b.get::<Keypoints>(), Some(&Keypoints(vec![(1.0, 2.0)])));
        assert_eq!(b.get::<u32>(), Some(&7));
        assert_eq!(b.len(), 2);
        a.insert(8u32);
        assert_eq!(a.get::<u32>(), Some(&8));
        assert_eq!(b.get::<u32>(), Some(&7));
    }

    #[test]
    fn control_lookup_by_kind() {
        let frame = Frame::new(0, 1, 1, vec![1, 2, 3]).unwrap();
        let mut p = PreparedFrame::new(frame.clone());
        assert!(p.control(ControlKind::Openpose).is_none());
        p.controls.push(ControlImage {
            kind: ControlKind::Softedge,
            image: frame.clone(),
        });
        assert_eq!(p.control(ControlKind::Softedge), Some(&frame));
        assert!(p.control(ControlKind::Openpose).is_none());
    }
}
