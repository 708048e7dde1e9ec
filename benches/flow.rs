//! Dense optical flow on a 512² frame pair: median wall time of a few runs.
//! `cargo bench --bench flow`

use rotoscope::flow::{estimate_flow, FlowParams, Plane};
use std::time::Instant;

fn textured(size: usize, shift: f32) -> Plane {
    let mut p = Plane::new(size, size);
    for y in 0..size {
        for x in 0..size {
            let fx = x as f32 - shift;
            p.data[y * size + x] = 0.5
                + 0.2 * (fx * 0.21).sin() * (y as f32 * 0.17).cos()
                + 0.1 * ((fx + y as f32) * 0.05).sin();
        }
    }
    p
}

fn main() {
    let (a, b) = (textured(512, 0.0), textured(512, 3.0));
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            let flow = estimate_flow(&a, &b, &FlowParams::default());
            std::hint::black_box(flow);
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(|x, y| x.total_cmp(y));
    println!(
        "flow 512x512: median {:.1} ms over {} runs",
        times[times.len() / 2] * 1e3,
        times.len()
    );
}
