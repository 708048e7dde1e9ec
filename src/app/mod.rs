//! What the commands do, apart from how they are asked: render jobs, batches, stills.

pub mod args;
pub mod batch;
pub mod detail_stage;
pub mod error;
pub mod events;
pub mod io;
pub mod job;
pub mod map_cache;
pub mod render_job;
pub mod renderer;
pub mod resolve;
pub mod still;
