use rotoscope::preprocess::tflite::{Array, TfliteModel};
#[test]
#[ignore]
fn scratch_top_nodes() {
    let name = std::env::var("MODEL").unwrap();
    let model = TfliteModel::load(format!("/tmp/tfl/models/mediapipe/{name}.tflite")).unwrap();
    let shape = model.inputs()[0].shape.clone();
    let input = || Array::new(shape.clone(), (0..shape.iter().product::<usize>()).map(|i| ((i * 7919 % 1000) as f32) / 1000.0).collect());
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let mut best = pool.install(|| model.profile(vec![input()])).unwrap();
    for _ in 0..8 {
        for (b, t) in best.iter_mut().zip(pool.install(|| model.profile(vec![input()])).unwrap()) {
            b.elapsed = b.elapsed.min(t.elapsed);
        }
    }
    for e in best.iter() { println!("NODE {} {} {:.4}", e.index, e.op, e.elapsed.as_secs_f64()*1e3); }
}
