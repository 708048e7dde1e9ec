//! `cv2.resize` parity of the soft-edge preprocessor's resizes, on crops of a real photo
//! (tests/fixtures/hed/resize.safetensors, made by scripts/fixtures/hed.py with
//! opencv-python-headless 5.0.0.93). Bit-exact: every byte must match.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rotoscope::preprocess::softedge::resize::{resize, ImageU8, Interpolation};

fn fixture() -> HashMap<String, Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hed/resize.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).expect("resize fixture")
}

fn bytes(t: &Tensor) -> Vec<u8> {
    t.flatten_all().unwrap().to_vec1::<u8>().unwrap()
}

#[test]
fn resizes_match_opencv_bit_for_bit() {
    let tensors = fixture();
    let mut checked = 0;
    for (name, want) in &tensors {
        let Some((source, rest)) = name.split_once('_').filter(|(s, _)| *s != "src") else {
            continue;
        };
        let (interpolation, size) = rest.split_once('_').unwrap();
        let (width, height) = size.split_once('x').unwrap();
        let (width, height): (usize, usize) = (width.parse().unwrap(), height.parse().unwrap());
        let interpolation = match interpolation {
            "area" => Interpolation::Area,
            "linear" => Interpolation::Linear,
            "lanczos4" => Interpolation::Lanczos4,
            other => panic!("unknown interpolation {other}"),
        };
        let src = &tensors[&format!("src_{source}")];
        let dims = src.dims();
        let data = bytes(src);
        let image = ImageU8 {
            data: &data,
            width: dims[1],
            height: dims[0],
            channels: dims.get(2).copied().unwrap_or(1),
        };
        let got = resize(image, width, height, interpolation);
        let want = bytes(want);
        let differing = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(got.len(), want.len(), "{name}: size");
        assert_eq!(
            differing,
            0,
            "{name}: {differing} of {} bytes differ from cv2",
            want.len()
        );
        checked += 1;
    }
    assert_eq!(checked, 13, "all resize cases present");
}
