use rotoscope::bench::unet::{random_sd15_unet, time_unet_step};
use rotoscope::nn::{with_weight_precision, WeightPrecision};
use rotoscope::models::unet::UNetExtras;
use candle_core::Tensor;
fn rss() -> u64 { std::fs::read_to_string("/proc/self/status").unwrap().lines().find(|l| l.starts_with("VmRSS")).unwrap().split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()/1024 }
fn main() {
    let size: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(64);
    let f = random_sd15_unet().unwrap();
    println!("f32 rss {} MiB", rss());
    let b = with_weight_precision(WeightPrecision::Bf16, || random_sd15_unet().unwrap());
    println!("f32+bf16 rss {} MiB", rss());
    // drift
    let dev = candle_core::Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (2, 4, size, size), &dev).unwrap();
    let e = Tensor::randn(0f32, 1.0, (2, 77, 768), &dev).unwrap();
    let yf = f.forward(&x, 500.0, &e, &UNetExtras::default()).unwrap();
    let yb = b.forward(&x, 500.0, &e, &UNetExtras::default()).unwrap();
    println!("drift rel l2 {:.3e}", rotoscope::nn::tensor_diff::relative_l2_error(&yb, &yf).unwrap());
    for _ in 0..2 {
        let tf = time_unet_step(&f, 2, size, 3).unwrap();
        let tb = time_unet_step(&b, 2, size, 3).unwrap();
        println!("f32 {:?}\nbf16 {:?}", tf.seconds, tb.seconds);
    }
}
