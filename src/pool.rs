//! Running a whole computation on rayon's pool instead of entering it op by op.
//!
//! A parallel loop started from a thread outside the pool (the main thread, a pipeline
//! stage's thread) is injected into the pool, and the caller sleeps until a worker has run it
//! and wakes it again. For models made of hundreds of sub-millisecond layers those two thread
//! hand-offs per layer ate most of the second core. Entering the pool once per model run or
//! per rendered batch, the layers' loops split between workers directly. Measured on 2 cores:
//! MediaPipe pose landmarks (256²) 14.2 → 11.3 ms (15.3 ms on one thread); SD1.5 UNet step at
//! 32² latents −6 % (at 64² the layers are large enough that it makes no difference); the
//! render stage of `presets/smoke.yaml` (tiny models) 8.7 → 3.9 s. Not used for HED: no gain
//! there, and its per-thread buffers then cost 58 MB more.

/// Runs `f` on a rayon worker thread: directly when already on one, else by entering the
/// global pool once (the caller blocks until `f` returns).
pub fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_a_worker_and_returns_its_value() {
        assert_eq!(
            rayon::current_thread_index(),
            None,
            "test threads are not workers"
        );
        let (index, value) = on_worker(|| (rayon::current_thread_index(), 42));
        assert!(index.is_some());
        assert_eq!(value, 42);
        // Nested: already on a worker, stays there.
        let nested = on_worker(|| on_worker(rayon::current_thread_index));
        assert!(nested.is_some());
    }
}
