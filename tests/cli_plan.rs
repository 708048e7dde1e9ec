//! `rotoscope plan` prints the batches (index, frame range, overlap) and an estimate.

mod cli_common;

use cli_common::*;

#[test]
fn plan_of_the_sample_with_a_bundled_preset() {
    let out = rotoscope([
        "plan".as_ref(),
        sample().as_os_str(),
        "-p".as_ref(),
        "anime".as_ref(),
    ]);
    let text = assert_ok(&out);
    assert!(text.contains("512x512, 24 fps, 72 frames"), "{text}");
    assert!(
        text.contains("batches   1 (at most 96 frames, 10 shared with the next)"),
        "{text}"
    );
    assert!(text.contains("0..72"), "{text}");
    assert!(text.contains("dpmpp_2m_karras 20 steps"), "{text}");
    assert!(
        text.contains("peak memory") && text.contains("render time"),
        "{text}"
    );
}

#[test]
fn plan_json_lists_overlapping_batches_over_the_selected_frames() {
    let dir = tempfile::tempdir().unwrap();
    let preset = write_preset(
        dir.path(),
        "small.yaml",
        "name: small\nmodel: {base: a/b}\nprompt: p\nbatch: {frames: 20, overlap: 4}\n\
         controlnets:\n  - {type: openpose, model: lllyasviel/control_v11p_sd15_openpose}\n",
    );
    let out = rotoscope([
        "plan".as_ref(),
        sample().as_os_str(),
        "-p".as_ref(),
        preset.as_os_str(),
        "--frames".as_ref(),
        "12..".as_ref(),
        "--json".as_ref(),
    ]);
    let json: serde_json::Value = serde_json::from_str(&assert_ok(&out)).unwrap();
    assert_eq!(json["frames"]["start"], 12);
    assert_eq!(json["frames"]["end"], 72);
    assert_eq!(json["preset"]["name"], "small");
    let plan = &json["plan"];
    assert_eq!(plan["total_frames"], 60);
    // 60 frames, at most 20 per batch, 4 shared: ceil(56 / 16) = 4 batches covering
    // 60 + 3·4 = 72 slots, 18 frames each.
    let ranges: Vec<(u64, u64, u64)> = plan["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["start"].as_u64().unwrap(),
                b["end"].as_u64().unwrap(),
                b["overlap_with_previous"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ranges, [(0, 18, 0), (14, 32, 4), (28, 46, 4), (42, 60, 4)]);
    let estimate = &json["estimate"];
    assert_eq!(estimate["rendered_frames"], 60 + 3 * 4);
    assert!(
        estimate["peak_memory_bytes"].as_u64().unwrap()
            > estimate["weights_bytes"].as_u64().unwrap()
    );
    assert!(estimate["total_seconds"].as_f64().unwrap() > 0.0);

    // The text form shows the same ranges on the clip's own frame numbers.
    let out = rotoscope([
        "plan".as_ref(),
        sample().as_os_str(),
        "-p".as_ref(),
        preset.as_os_str(),
        "--frames".as_ref(),
        "12..".as_ref(),
    ]);
    let text = assert_ok(&out);
    assert!(text.contains("only frames 12..72"), "{text}");
    for range in ["12..30", "26..44", "40..58", "54..72"] {
        assert!(text.contains(range), "{range} missing from:\n{text}");
    }
}
