//! What the commands do, apart from how they are asked: render jobs, batches, stills.

pub mod map_cache;
pub mod render_job;
