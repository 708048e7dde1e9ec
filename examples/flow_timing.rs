use rotoscope::flow::{estimate_flow, FlowParams, Plane};
use std::time::Instant;
fn main() {
    let (w, h) = (512usize, 512usize);
    let mk = |s: f32| {
        let mut p = Plane::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let fx = x as f32 - s;
                p.data[y * w + x] = 0.5
                    + 0.2 * (fx * 0.21).sin() * (y as f32 * 0.17).cos()
                    + 0.1 * ((fx + y as f32) * 0.05).sin();
            }
        }
        p
    };
    let (a, b) = (mk(0.0), mk(3.0));
    let mut times = vec![];
    for _ in 0..5 {
        let t = Instant::now();
        let f = estimate_flow(&a, &b, &FlowParams::default());
        times.push(t.elapsed().as_secs_f64());
        assert!(f.width() == w);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("median {:.1} ms", times[2] * 1e3);
}
