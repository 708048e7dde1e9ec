//! Resumable renders: every finished batch is kept in a work directory, a rerun takes
//! finished batches from there instead of rendering them, and an interrupted render (Ctrl-C,
//! a kill, a crash) loses at most the batch it was working on.
//!
//! Layout of the work directory (default `<output>.work/` next to the output):
//!
//! ```text
//! batch_0000/manifest.json     what the batch is (see [`BatchManifest`]) and its frame files
//! batch_0000/frame_000000.png  the renderer's output frames, before detailing and blending
//! batch_0000/detailed/         the same frames after face/hand detailing (own manifest),
//!                              when the preset details; written after the batch itself
//! batch_0001.partial/          a batch being written; renamed to batch_0001/ when complete
//! anchor/manifest.json         the anchor frame's output (cross-frame attention)
//! anchor/frame_000000.png
//! ```
//!
//! A batch directory only appears complete (the rename is atomic), so whatever stopped a
//! render, every `batch_NNNN/` is whole; stray `.partial` directories are removed on the next
//! start. A batch counts as finished only if its manifest matches this run exactly: renderer
//! version, preset fingerprint, input fingerprint (size, modification time, SHA-256 of its
//! first and last MiB), frame range, frame rate, render size, seed and the batch's range. Anything
//! else is discarded, and the caller is told why.
//!
//! Detailed frames are kept apart from the renderer's: the next batch continues from the
//! renderer's frames ([`LeadIn`]), the output is made of the detailed ones. A batch whose
//! `detailed/` is missing (the render stopped between rendering and detailing it, or a work
//! directory from before detailed frames were kept) is read back and detailed again.
//!
//! Determinism: frames are u8 and PNG is lossless, so a batch read back is byte for byte what
//! was rendered; the temporal state a batch starts from ([`LeadIn`]: the frame before it,
//! input and output) is the same whether the previous batch was rendered in this run or read
//! from disk. An interrupted-then-resumed render therefore equals an uninterrupted one.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::pipeline::plan::Batch;
use crate::pipeline::stages::{FrameRenderer, PreparedFrame, StageError};
use crate::video::png_sequence::{self, frame_file_name};
use crate::video::Frame;

/// Version of the work-directory format and of the renderer's output for given inputs.
/// Bump when either changes, so old work directories are not mixed into new renders.
pub const WORK_FORMAT: u32 = 1;

const MANIFEST: &str = "manifest.json";
const PARTIAL_SUFFIX: &str = ".partial";
const ANCHOR_DIR: &str = "anchor";
const DETAILED_DIR: &str = "detailed";

#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("work directory {}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("work directory {}: {} is not a directory", root.display(), root.display())]
    NotADirectory { root: PathBuf },
    #[error("{}: unreadable batch: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
}

fn io_err(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> ResumeError {
    let path = path.to_path_buf();
    move |source| ResumeError::Io {
        path,
        action,
        source,
    }
}

use crate::cancel::StopFlag;

/// Everything that decides what a render produces, besides the batch itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunIdentity {
    pub format: u32,
    /// Renderer name and program version.
    pub renderer: String,
    pub preset_fingerprint: String,
    /// [`fingerprint_file`](crate::preprocess::cache::fingerprint_file) of the input: size,
    /// modification time, first and last MiB.
    pub input: String,
    /// First input frame and number of frames rendered (`--frames`).
    pub first_frame: u64,
    pub frame_count: u64,
    pub fps: String,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
}

impl RunIdentity {
    /// What differs from `other`, in words, for the message that explains a restart.
    pub fn differences(&self, other: &RunIdentity) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.format != other.format || self.renderer != other.renderer {
            out.push("renderer version");
        }
        if self.preset_fingerprint != other.preset_fingerprint {
            out.push("preset");
        }
        if self.input != other.input {
            out.push("input file");
        }
        if (self.first_frame, self.frame_count, &self.fps)
            != (other.first_frame, other.frame_count, &other.fps)
        {
            out.push("frame range or rate");
        }
        if (self.width, self.height) != (other.width, other.height) {
            out.push("render size");
        }
        if self.seed != other.seed {
            out.push("seed");
        }
        out
    }
}

/// `manifest.json` of a finished batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchManifest {
    pub run: RunIdentity,
    /// The input path when the batch was rendered (informational: a moved file still
    /// resumes).
    pub input_path: String,
    pub batch: usize,
    /// Frame range of the batch, relative to the first rendered frame.
    pub start: usize,
    pub end: usize,
    /// Input frame index and file name of every frame, in order.
    pub frames: Vec<FrameFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameFile {
    pub index: u64,
    pub file: String,
}

/// What opening a work directory found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Batches from an earlier run of this very render.
    pub reusable: usize,
    /// Entries removed because they belong to a different render, and why.
    pub invalidated: usize,
    pub reasons: Vec<&'static str>,
    /// Entries removed by `--no-resume`.
    pub cleared: usize,
    /// Half-written entries of a run that was killed.
    pub partial: usize,
}

impl OpenReport {
    /// One line for the user, or `None` when there is nothing to say.
    pub fn describe(&self, root: &Path) -> Option<String> {
        let root = root.display();
        if self.cleared > 0 {
            return Some(format!(
                "--no-resume: removed {} finished batch(es) from {root}",
                self.cleared
            ));
        }
        if self.invalidated > 0 {
            return Some(format!(
                "{root}: {} finished batch(es) are out of date (changed: {}); rendering from scratch",
                self.invalidated,
                self.reasons.join(", ")
            ));
        }
        if self.reusable > 0 {
            return Some(format!(
                "resuming: {} finished batch(es) in {root} are reused",
                self.reusable
            ));
        }
        None
    }
}

/// A work directory for one render (see the module docs).
#[derive(Debug, Clone)]
pub struct WorkDir {
    root: PathBuf,
    run: RunIdentity,
    input_path: String,
}

/// Which of our entries a directory name is.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Batch(usize),
    Anchor,
    Partial,
    Other,
}

fn classify(name: &str) -> Entry {
    if name
        .strip_suffix(PARTIAL_SUFFIX)
        .is_some_and(|stem| stem == ANCHOR_DIR || matches!(classify(stem), Entry::Batch(_)))
    {
        return Entry::Partial;
    }
    if name == ANCHOR_DIR {
        return Entry::Anchor;
    }
    match name.strip_prefix("batch_") {
        Some(digits) if digits.len() >= 4 && digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse().map_or(Entry::Other, Entry::Batch)
        }
        _ => Entry::Other,
    }
}

/// The default work directory of an output: `<output>.work` next to it.
pub fn default_work_dir(output: &Path) -> PathBuf {
    let trimmed = output
        .to_string_lossy()
        .trim_end_matches(['/', '\\'])
        .to_string();
    PathBuf::from(format!("{trimmed}.work"))
}

impl WorkDir {
    /// Open (creating) `root` for the render `run`. With `resume` off, everything a previous
    /// run left is removed; otherwise entries of a different render are. Only names this
    /// module writes are ever removed, so pointing `--work-dir` at a used directory is safe.
    pub fn open(
        root: &Path,
        run: RunIdentity,
        input_path: &Path,
        resume: bool,
    ) -> Result<(Self, OpenReport), ResumeError> {
        if root.exists() && !root.is_dir() {
            return Err(ResumeError::NotADirectory {
                root: root.to_path_buf(),
            });
        }
        fs::create_dir_all(root).map_err(io_err(root, "cannot create it"))?;
        let work = WorkDir {
            root: root.to_path_buf(),
            run,
            input_path: input_path.display().to_string(),
        };
        let mut report = OpenReport::default();
        for (name, path) in work.entries()? {
            let entry = classify(&name);
            if entry == Entry::Other {
                continue;
            }
            if entry == Entry::Partial {
                remove_dir(&path)?;
                report.partial += 1;
                continue;
            }
            if !resume {
                remove_dir(&path)?;
                report.cleared += usize::from(matches!(entry, Entry::Batch(_)));
                continue;
            }
            match work.read_manifest_run(&path) {
                Some(run) if run == work.run => {
                    report.reusable += usize::from(matches!(entry, Entry::Batch(_)));
                }
                other => {
                    if let Some(run) = other {
                        for reason in run.differences(&work.run) {
                            if !report.reasons.contains(&reason) {
                                report.reasons.push(reason);
                            }
                        }
                    } else if !report.reasons.contains(&"unreadable manifest") {
                        report.reasons.push("unreadable manifest");
                    }
                    remove_dir(&path)?;
                    report.invalidated += usize::from(matches!(entry, Entry::Batch(_)));
                }
            }
        }
        Ok((work, report))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn run(&self) -> &RunIdentity {
        &self.run
    }

    fn entries(&self) -> Result<Vec<(String, PathBuf)>, ResumeError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(io_err(&self.root, "cannot list it"))? {
            let entry = entry.map_err(io_err(&self.root, "cannot list it"))?;
            if let Some(name) = entry.file_name().to_str() {
                out.push((name.to_string(), entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    fn read_manifest_run(&self, dir: &Path) -> Option<RunIdentity> {
        #[derive(Deserialize)]
        struct RunOnly {
            run: RunIdentity,
        }
        let text = fs::read_to_string(dir.join(MANIFEST)).ok()?;
        serde_json::from_str::<RunOnly>(&text).ok().map(|m| m.run)
    }

    fn batch_dir(&self, index: usize) -> PathBuf {
        self.root.join(format!("batch_{index:04}"))
    }

    /// The manifest of `batch` if it is finished for this run and plan.
    fn finished_manifest(&self, batch: &Batch) -> Option<BatchManifest> {
        let dir = self.batch_dir(batch.index);
        let text = fs::read_to_string(dir.join(MANIFEST)).ok()?;
        let manifest: BatchManifest = serde_json::from_str(&text).ok()?;
        let complete = manifest.run == self.run
            && (manifest.batch, manifest.start, manifest.end)
                == (batch.index, batch.start, batch.end)
            && manifest.frames.len() == batch.len()
            && manifest.frames.iter().all(|f| dir.join(&f.file).is_file());
        complete.then_some(manifest)
    }

    /// Whether `batch` is finished (cheap: no image is read).
    pub fn is_finished(&self, batch: &Batch) -> bool {
        self.finished_manifest(batch).is_some()
    }

    /// The frames of a finished batch, in order.
    pub fn load_batch(&self, batch: &Batch) -> Result<Vec<Frame>, ResumeError> {
        let dir = self.batch_dir(batch.index);
        let manifest = self
            .finished_manifest(batch)
            .ok_or_else(|| ResumeError::Unreadable {
                path: dir.clone(),
                reason: "no finished batch with a matching manifest".into(),
            })?;
        manifest
            .frames
            .iter()
            .map(|f| self.read_frame(&dir.join(&f.file), f.index))
            .collect()
    }

    fn read_frame(&self, path: &Path, index: u64) -> Result<Frame, ResumeError> {
        let unreadable = |reason: String| ResumeError::Unreadable {
            path: path.to_path_buf(),
            reason,
        };
        let image = image::open(path)
            .map_err(|e| unreadable(e.to_string()))?
            .into_rgb8();
        if image.dimensions() != (self.run.width, self.run.height) {
            return Err(unreadable(format!(
                "{}x{} instead of {}x{}",
                image.width(),
                image.height(),
                self.run.width,
                self.run.height
            )));
        }
        Ok(Frame::from_rgb_image(index, image))
    }

    /// Store the rendered frames of `batch` (one per batch frame, in order): written into
    /// `batch_NNNN.partial/`, then renamed.
    pub fn save_batch(&self, batch: &Batch, frames: &[Frame]) -> Result<(), ResumeError> {
        let manifest = self.manifest_for(batch, frames);
        self.commit(&self.batch_dir(batch.index), &manifest, frames)
    }

    /// Store the detailed frames of the finished `batch` (one per batch frame, in order) in
    /// `batch_NNNN/detailed/`, written into `detailed.partial/` and renamed. A batch that is
    /// rendered again loses them with the rest of its directory.
    pub fn save_detailed(&self, batch: &Batch, frames: &[Frame]) -> Result<(), ResumeError> {
        let dir = self.batch_dir(batch.index);
        if self.finished_manifest(batch).is_none() {
            return Err(ResumeError::Unreadable {
                path: dir,
                reason: "detailed frames of a batch that is not finished".into(),
            });
        }
        let manifest = self.manifest_for(batch, frames);
        self.commit(&dir.join(DETAILED_DIR), &manifest, frames)
    }

    /// The detailed frames of `batch`, if it is finished and they were stored for this run.
    /// Anything short of that is `Ok(None)` (detail the batch again); an unreadable image
    /// of a complete entry is an error.
    pub fn load_detailed(&self, batch: &Batch) -> Result<Option<Vec<Frame>>, ResumeError> {
        let Some(rendered) = self.finished_manifest(batch) else {
            return Ok(None);
        };
        let dir = self.batch_dir(batch.index).join(DETAILED_DIR);
        let Ok(text) = fs::read_to_string(dir.join(MANIFEST)) else {
            return Ok(None);
        };
        let Ok(manifest) = serde_json::from_str::<BatchManifest>(&text) else {
            return Ok(None);
        };
        let indices = |m: &BatchManifest| m.frames.iter().map(|f| f.index).collect::<Vec<_>>();
        let complete = manifest.run == self.run
            && (manifest.batch, manifest.start, manifest.end)
                == (batch.index, batch.start, batch.end)
            && indices(&manifest) == indices(&rendered)
            && manifest.frames.iter().all(|f| dir.join(&f.file).is_file());
        if !complete {
            return Ok(None);
        }
        manifest
            .frames
            .iter()
            .map(|f| self.read_frame(&dir.join(&f.file), f.index))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Whether `batch` is finished and its detailed frames are stored (cheap).
    pub fn is_detailed(&self, batch: &Batch) -> bool {
        let dir = self.batch_dir(batch.index).join(DETAILED_DIR);
        self.is_finished(batch) && dir.join(MANIFEST).is_file()
    }

    fn manifest_for(&self, batch: &Batch, frames: &[Frame]) -> BatchManifest {
        BatchManifest {
            run: self.run.clone(),
            input_path: self.input_path.clone(),
            batch: batch.index,
            start: batch.start,
            end: batch.end,
            frames: frames
                .iter()
                .map(|f| FrameFile {
                    index: f.index,
                    file: frame_file_name(f.index),
                })
                .collect(),
        }
    }

    /// The cached output of anchor frame `index`, if this run stored it.
    pub fn load_anchor(&self, index: u64) -> Result<Option<Frame>, ResumeError> {
        let dir = self.root.join(ANCHOR_DIR);
        let Ok(text) = fs::read_to_string(dir.join(MANIFEST)) else {
            return Ok(None);
        };
        let Ok(manifest) = serde_json::from_str::<BatchManifest>(&text) else {
            return Ok(None);
        };
        match manifest.frames.as_slice() {
            [only] if manifest.run == self.run && only.index == index => {
                self.read_frame(&dir.join(&only.file), index).map(Some)
            }
            _ => Ok(None),
        }
    }

    pub fn save_anchor(&self, frame: &Frame) -> Result<(), ResumeError> {
        let manifest = BatchManifest {
            run: self.run.clone(),
            input_path: self.input_path.clone(),
            batch: 0,
            start: 0,
            end: 0,
            frames: vec![FrameFile {
                index: frame.index,
                file: frame_file_name(frame.index),
            }],
        };
        self.commit(
            &self.root.join(ANCHOR_DIR),
            &manifest,
            std::slice::from_ref(frame),
        )
    }

    fn commit(
        &self,
        dir: &Path,
        manifest: &BatchManifest,
        frames: &[Frame],
    ) -> Result<(), ResumeError> {
        let partial = PathBuf::from(format!("{}{PARTIAL_SUFFIX}", dir.display()));
        if partial.exists() {
            remove_dir(&partial)?;
        }
        fs::create_dir_all(&partial).map_err(io_err(&partial, "cannot create it"))?;
        let written = (|| {
            for (frame, file) in frames.iter().zip(&manifest.frames) {
                write_png(&partial.join(&file.file), frame)?;
            }
            let path = partial.join(MANIFEST);
            let text = serde_json::to_string_pretty(manifest)
                .expect("manifests are plain data and always serialize");
            let mut out = File::create(&path).map_err(io_err(&path, "cannot create it"))?;
            std::io::Write::write_all(&mut out, text.as_bytes())
                .and_then(|()| out.sync_all())
                .map_err(io_err(&path, "cannot write it"))?;
            if dir.exists() {
                remove_dir(dir)?;
            }
            fs::rename(&partial, dir).map_err(io_err(dir, "cannot move the finished batch here"))
        })();
        if written.is_err() {
            let _ = fs::remove_dir_all(&partial);
        }
        written
    }

    /// Remove every entry this module wrote, and the directory itself if nothing else is in
    /// it (after a successful render).
    pub fn remove(&self) -> Result<(), ResumeError> {
        for (name, path) in self.entries()? {
            if classify(&name) != Entry::Other {
                remove_dir(&path)?;
            }
        }
        let _ = fs::remove_dir(&self.root);
        Ok(())
    }
}

fn remove_dir(path: &Path) -> Result<(), ResumeError> {
    fs::remove_dir_all(path).map_err(io_err(path, "cannot remove it"))
}

/// A finished frame into the work directory, written as the PNG sequence output writes it.
fn write_png(path: &Path, frame: &Frame) -> Result<(), ResumeError> {
    png_sequence::write_png(path, frame).map_err(|e| ResumeError::Io {
        path: path.to_path_buf(),
        action: "cannot write it",
        source: std::io::Error::other(e),
    })
}

/// The last frame before a batch, input and output: what the batch's first frame continues
/// from (TemporalNet's previous output, flow init, the flow itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadIn {
    /// The input frame (source size).
    pub source: Frame,
    /// The renderer's output for it (render size, before overlap blending).
    pub output: Frame,
}

/// Position in `batch` of the frame just before the next batch starts.
pub fn lead_in_position(batch: &Batch) -> usize {
    batch.len() - batch.overlap_with_next - 1
}

/// The lead-in of the batch after `batch`, from this batch's inputs and outputs.
pub fn next_lead_in(batch: &Batch, inputs: &[PreparedFrame], outputs: &[Frame]) -> Option<LeadIn> {
    let at = lead_in_position(batch);
    Some(LeadIn {
        source: inputs.get(at)?.source.clone(),
        output: outputs.get(at)?.clone(),
    })
}

/// A renderer whose batches continue from the frame before them.
pub trait ChainedRenderer: Send {
    /// Render `frames` (batch `batch`), the first continuing from `lead_in` (none for the
    /// clip's first batch). Checks `stop` between frames and returns [`Interrupted`](crate::cancel::Interrupted).
    fn render_chained(
        &mut self,
        batch: &Batch,
        frames: &[PreparedFrame],
        lead_in: Option<&LeadIn>,
        stop: &StopFlag,
    ) -> Result<Vec<Frame>, StageError>;
}

/// Builds the real renderer the first time a batch needs rendering (model loading is skipped
/// entirely when every batch is finished); gets the work directory and that batch's frames.
pub type RendererFactory = Box<
    dyn FnOnce(&WorkDir, &[PreparedFrame]) -> Result<Box<dyn ChainedRenderer>, StageError> + Send,
>;

enum Lazy {
    Pending(Option<RendererFactory>),
    Ready(Box<dyn ChainedRenderer>),
}

/// Called with one line for the user (a batch read back, a batch that had to be redone).
pub type Notifier = Arc<dyn Fn(&str) + Send + Sync>;

/// The pipeline's renderer for resumable renders: finished batches come from the work
/// directory, the others from the real renderer, and are stored as they finish.
pub struct ResumableRenderer {
    name: String,
    output_size: (u32, u32),
    work: WorkDir,
    renderer: Lazy,
    lead_in: Option<LeadIn>,
    stop: StopFlag,
    notify: Notifier,
    /// Batches read back / rendered in this run.
    pub loaded: usize,
    pub rendered: usize,
}

impl ResumableRenderer {
    pub fn new(
        name: &str,
        output_size: (u32, u32),
        work: WorkDir,
        factory: RendererFactory,
        stop: StopFlag,
        notify: Notifier,
    ) -> Self {
        Self {
            name: name.to_string(),
            output_size,
            work,
            renderer: Lazy::Pending(Some(factory)),
            lead_in: None,
            stop,
            notify,
            loaded: 0,
            rendered: 0,
        }
    }

    fn renderer(
        &mut self,
        frames: &[PreparedFrame],
    ) -> Result<&mut dyn ChainedRenderer, StageError> {
        if let Lazy::Pending(factory) = &mut self.renderer {
            let factory = factory
                .take()
                .ok_or("the renderer failed to load earlier in this run")?;
            self.renderer = Lazy::Ready(factory(&self.work, frames)?);
        }
        match &mut self.renderer {
            Lazy::Ready(r) => Ok(r.as_mut()),
            Lazy::Pending(_) => unreachable!("the renderer was just built"),
        }
    }
}

impl FrameRenderer for ResumableRenderer {
    fn name(&self) -> &str {
        &self.name
    }

    fn output_size(&self, _input_width: u32, _input_height: u32) -> (u32, u32) {
        self.output_size
    }

    fn render_batch(
        &mut self,
        batch: &Batch,
        frames: &[PreparedFrame],
    ) -> Result<Vec<Frame>, StageError> {
        self.stop.check()?;
        let mut outputs = None;
        if self.work.is_finished(batch) {
            match self.work.load_batch(batch) {
                Ok(frames) => {
                    self.loaded += 1;
                    outputs = Some(frames);
                }
                Err(e) => (self.notify)(&format!("{e}; rendering batch {} again", batch.index)),
            }
        }
        let outputs = match outputs {
            Some(frames) => frames,
            None => {
                let lead_in = self.lead_in.take();
                let stop = self.stop.clone();
                let rendered = self.renderer(frames)?.render_chained(
                    batch,
                    frames,
                    lead_in.as_ref(),
                    &stop,
                )?;
                self.work.save_batch(batch, &rendered)?;
                self.rendered += 1;
                rendered
            }
        };
        self.lead_in = next_lead_in(batch, frames, &outputs);
        Ok(outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::plan::plan_batches;

    fn run() -> RunIdentity {
        RunIdentity {
            format: WORK_FORMAT,
            renderer: "test".into(),
            preset_fingerprint: "abc".into(),
            input: "00".into(),
            first_frame: 0,
            frame_count: 10,
            fps: "24/1".into(),
            width: 2,
            height: 1,
            seed: 5,
        }
    }

    fn frame(index: u64, value: u8) -> Frame {
        Frame::new(index, 2, 1, vec![value; 6]).unwrap()
    }

    #[test]
    fn entry_names() {
        assert_eq!(classify("batch_0003"), Entry::Batch(3));
        assert_eq!(classify("batch_12345"), Entry::Batch(12345));
        assert_eq!(classify("batch_0003.partial"), Entry::Partial);
        assert_eq!(classify("anchor"), Entry::Anchor);
        assert_eq!(classify("anchor.partial"), Entry::Partial);
        assert_eq!(classify("batch_3"), Entry::Other);
        assert_eq!(classify("notes.txt.partial"), Entry::Other);
        assert_eq!(classify("my-frames"), Entry::Other);
    }

    #[test]
    fn default_work_dir_sits_next_to_the_output() {
        assert_eq!(
            default_work_dir(Path::new("out/a.mp4")),
            PathBuf::from("out/a.mp4.work")
        );
        assert_eq!(
            default_work_dir(Path::new("frames/")),
            PathBuf::from("frames.work")
        );
    }

    #[test]
    fn differences_are_named() {
        let a = run();
        let mut b = run();
        assert!(a.differences(&b).is_empty());
        b.preset_fingerprint = "def".into();
        b.seed = 6;
        assert_eq!(a.differences(&b), vec!["preset", "seed"]);
    }

    #[test]
    fn batches_round_trip_and_invalidate() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("w");
        let plan = plan_batches(10, 6, 2).unwrap();
        let (work, report) = WorkDir::open(&root, run(), Path::new("in.mp4"), true).unwrap();
        assert_eq!(report, OpenReport::default());
        let b0 = &plan.batches[0];
        assert!(!work.is_finished(b0));
        let frames: Vec<Frame> = b0.frames().map(|i| frame(i as u64, i as u8 * 10)).collect();
        work.save_batch(b0, &frames).unwrap();
        assert!(work.is_finished(b0));
        assert!(!work.is_finished(&plan.batches[1]));
        assert_eq!(work.load_batch(b0).unwrap(), frames);
        // Someone else's file in the directory survives everything.
        fs::write(root.join("notes.txt"), "keep").unwrap();
        // A killed run's half-written batch.
        fs::create_dir(root.join("batch_0001.partial")).unwrap();

        let (work, report) = WorkDir::open(&root, run(), Path::new("moved.mp4"), true).unwrap();
        assert_eq!((report.reusable, report.partial), (1, 1));
        assert!(report
            .describe(&root)
            .unwrap()
            .contains("1 finished batch(es)"));
        assert!(work.is_finished(b0));

        // A different plan (same batch index, other range) does not match.
        let other = plan_batches(10, 5, 1).unwrap();
        assert!(!work.is_finished(&other.batches[0]));

        let mut changed = run();
        changed.preset_fingerprint = "new".into();
        let (work, report) = WorkDir::open(&root, changed, Path::new("in.mp4"), true).unwrap();
        assert_eq!(report.invalidated, 1);
        assert_eq!(report.reasons, vec!["preset"]);
        let shown = report.describe(&root).unwrap();
        assert!(shown.contains("out of date (changed: preset)"), "{shown}");
        assert!(!work.is_finished(b0));
        assert!(root.join("notes.txt").is_file());

        work.save_batch(b0, &frames).unwrap();
        let (work, report) =
            WorkDir::open(&root, work.run().clone(), Path::new("in.mp4"), false).unwrap();
        assert_eq!(report.cleared, 1);
        assert!(!work.is_finished(b0));
        work.remove().unwrap();
        assert!(root.join("notes.txt").is_file());
    }

    #[test]
    fn detailed_frames_are_kept_next_to_the_rendered_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("w");
        let plan = plan_batches(10, 6, 2).unwrap();
        let b0 = &plan.batches[0];
        let (work, _) = WorkDir::open(&root, run(), Path::new("in.mp4"), true).unwrap();
        let rendered: Vec<Frame> = b0.frames().map(|i| frame(i as u64, 10)).collect();
        let detailed: Vec<Frame> = b0.frames().map(|i| frame(i as u64, 20)).collect();
        // Only a finished batch can hold detailed frames.
        assert!(work.save_detailed(b0, &detailed).is_err());
        work.save_batch(b0, &rendered).unwrap();
        assert!(!work.is_detailed(b0));
        assert_eq!(work.load_detailed(b0).unwrap(), None);
        work.save_detailed(b0, &detailed).unwrap();
        assert!(work.is_detailed(b0));
        // Both sets read back: the renderer's for the next batch, the detailed for output.
        assert_eq!(work.load_batch(b0).unwrap(), rendered);
        assert_eq!(work.load_detailed(b0).unwrap(), Some(detailed.clone()));

        let (work, report) = WorkDir::open(&root, run(), Path::new("in.mp4"), true).unwrap();
        assert_eq!(report.reusable, 1);
        assert_eq!(work.load_detailed(b0).unwrap(), Some(detailed.clone()));
        // Another batch range does not match them.
        let other = plan_batches(10, 5, 1).unwrap();
        assert_eq!(work.load_detailed(&other.batches[0]).unwrap(), None);
        // A batch rendered again loses its detailed frames.
        work.save_batch(b0, &rendered).unwrap();
        assert_eq!(work.load_detailed(b0).unwrap(), None);
        work.save_detailed(b0, &detailed).unwrap();
        // Another run (changed preset) drops the batch and its detailed frames.
        let mut changed = run();
        changed.preset_fingerprint = "new".into();
        let (work, report) = WorkDir::open(&root, changed, Path::new("in.mp4"), true).unwrap();
        assert_eq!(report.invalidated, 1);
        assert_eq!(work.load_detailed(b0).unwrap(), None);
        assert!(!root.join("batch_0000").exists());
    }

    #[test]
    fn anchor_is_cached_per_run_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let (work, _) = WorkDir::open(dir.path(), run(), Path::new("in.mp4"), true).unwrap();
        assert_eq!(work.load_anchor(3).unwrap(), None);
        work.save_anchor(&frame(3, 77)).unwrap();
        assert_eq!(work.load_anchor(3).unwrap(), Some(frame(3, 77)));
        assert_eq!(work.load_anchor(4).unwrap(), None);
        work.remove().unwrap();
        assert!(!dir.path().exists());
    }

    /// Renders frame i as value i + 100·(its lead-in's value + 1), to make chaining visible.
    struct Chained {
        calls: Arc<std::sync::Mutex<Vec<usize>>>,
    }

    impl ChainedRenderer for Chained {
        fn render_chained(
            &mut self,
            batch: &Batch,
            frames: &[PreparedFrame],
            lead_in: Option<&LeadIn>,
            stop: &StopFlag,
        ) -> Result<Vec<Frame>, StageError> {
            self.calls.lock().unwrap().push(batch.index);
            let base = lead_in.map_or(0, |l| l.output.data[0] as u64 + 1);
            let mut out = Vec::new();
            for f in frames {
                stop.check()?;
                out.push(frame(f.source.index, ((f.source.index + base) % 251) as u8));
            }
            Ok(out)
        }
    }

    fn render_all(root: &Path, stop_after: Option<usize>) -> (Vec<Vec<Frame>>, Vec<usize>) {
        let plan = plan_batches(10, 4, 1).unwrap();
        let (work, _) = WorkDir::open(root, run(), Path::new("in.mp4"), true).unwrap();
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let factory_calls = calls.clone();
        let stop = StopFlag::new();
        let mut renderer = ResumableRenderer::new(
            "chained",
            (2, 1),
            work,
            Box::new(move |_, _| {
                Ok(Box::new(Chained {
                    calls: factory_calls,
                }))
            }),
            stop.clone(),
            Arc::new(|_| {}),
        );
        let mut outputs = Vec::new();
        let mut carried: Vec<PreparedFrame> = Vec::new();
        let mut next = 0u64;
        for batch in &plan.batches {
            let mut inputs = std::mem::take(&mut carried);
            while inputs.len() < batch.len() {
                inputs.push(PreparedFrame::new(frame(next, 0)));
                next += 1;
            }
            if stop_after == Some(batch.index) {
                stop.request();
            }
            match renderer.render_batch(batch, &inputs) {
                Ok(out) => outputs.push(out),
                Err(e) => {
                    assert!(crate::cancel::is_interrupted(e.as_ref()));
                    break;
                }
            }
            carried = inputs.split_off(batch.len() - batch.overlap_with_next);
        }
        let calls = calls.lock().unwrap().clone();
        (outputs, calls)
    }

    #[test]
    fn interrupted_then_resumed_equals_uninterrupted() {
        let whole = tempfile::tempdir().unwrap();
        let (expected, calls) = render_all(whole.path(), None);
        assert_eq!(calls, vec![0, 1, 2]);

        let parts = tempfile::tempdir().unwrap();
        let (first, calls) = render_all(parts.path(), Some(2));
        assert_eq!(first.len(), 2);
        assert_eq!(calls, vec![0, 1]);
        let (resumed, calls) = render_all(parts.path(), None);
        assert_eq!(calls, vec![2], "only the unfinished batch is rendered");
        assert_eq!(resumed, expected);
    }
}
