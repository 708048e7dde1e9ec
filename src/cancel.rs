//! Cancellation: a render asked (by Ctrl-C in the CLI) to stop between two frames. A leaf
//! that the pipeline, the denoise loops and the detailer all read, so none of them imports
//! another for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The render was stopped on request (Ctrl-C) between two frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// Set to ask a running render to stop after the current frame.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask to stop; returns whether a stop had already been asked for.
    pub fn request(&self) -> bool {
        self.0.swap(true, Ordering::SeqCst)
    }

    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(Interrupted)` once a stop was requested.
    pub fn check(&self) -> Result<(), Interrupted> {
        if self.is_requested() {
            Err(Interrupted)
        } else {
            Ok(())
        }
    }
}

/// Whether an error (anywhere in its source chain) is an [`Interrupted`].
pub fn is_interrupted(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<Interrupted>().is_some() {
            return true;
        }
        current = e.source();
    }
    false
}
