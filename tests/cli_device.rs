//! `--device`: the device is chosen once on the command line. On a build without CUDA,
//! `--device cuda` fails before any work with exit code 2, naming the flag; a name that is
//! no device is refused by the argument parser (also exit code 2).

mod cli_common;

use cli_common::*;

#[test]
fn cuda_without_a_cuda_build_is_a_bad_flag() {
    let dir = std::env::temp_dir().join(format!("rotoscope-cli-device-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = dir.join("out.mp4");
    let out = rotoscope([
        "render".as_ref(),
        sample().as_os_str(),
        "-p".as_ref(),
        repo_path("presets/smoke.yaml").as_os_str(),
        "-o".as_ref(),
        output.as_os_str(),
        "--device".as_ref(),
        "cuda".as_ref(),
    ]);
    assert_error(&out, 2, &["--device cuda:0"]);
    assert!(!output.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unknown_device_is_refused_by_the_parser() {
    let out = rotoscope([
        "render".as_ref(),
        sample().as_os_str(),
        "-p".as_ref(),
        "anime".as_ref(),
        "-o".as_ref(),
        "out.mp4".as_ref(),
        "--device".as_ref(),
        "tpu".as_ref(),
    ]);
    assert_error(&out, 2, &["--device", "tpu"]);
}
