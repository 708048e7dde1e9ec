//! `rotoscope render` reports where the pipeline's time went: per-stage busy seconds and
//! shares of the wall time in the `--json` done event, and a one-line summary at the end of
//! a normal render. Tiny random models (tests/fixtures/pipeline) at 64×64; the values depend
//! on the machine, so only their presence and consistency are checked.

mod cli_common;
mod render_common;

use cli_common::*;

const STAGES: [&str; 8] = [
    "decode",
    "preprocess",
    "render",
    "detail",
    "blend",
    "encode",
    "render_waiting_for_input",
    "render_waiting_for_output",
];

/// Two batches of 8 frames sharing 2, so that the overlap is blended.
fn preset(dir: &std::path::Path) -> std::path::PathBuf {
    write_preset(
        dir,
        "fast.yaml",
        &format!(
            "model: {{base: {}}}\nprompt: test\nresolution: {{width: 64, height: 64}}\n\
             output: {{encoder_preset: ultrafast}}\nbatch: {{frames: 8, overlap: 2}}\n",
            repo_path("tests/fixtures/pipeline").display()
        ),
    )
}

#[test]
fn done_event_has_stage_times_that_fit_in_the_wall_time() {
    let dir = tempfile::tempdir().unwrap();
    let preset = preset(dir.path());
    let out = dir.path().join("out.mp4");
    let result = render_common::render(&sample(), &preset, &out, &["--frames", "..14", "--json"]);
    assert_ok(&result);
    let done = json_lines(&result).pop().unwrap();
    assert_eq!(done["event"], "done");
    let elapsed = done["elapsed"].as_f64().unwrap();
    let secs = |name: &str| {
        done["stage_secs"][name]
            .as_f64()
            .unwrap_or_else(|| panic!("stage_secs.{name} missing: {done}"))
    };
    let share = |name: &str| {
        done["stage_share_percent"][name]
            .as_f64()
            .unwrap_or_else(|| panic!("stage_share_percent.{name} missing: {done}"))
    };
    for stage in STAGES {
        let (s, p) = (secs(stage), share(stage));
        assert!(s >= 0.0 && s <= elapsed, "{stage}: {s} s of {elapsed} s");
        assert!((0.0..=100.0).contains(&p), "{stage}: {p} %");
    }
    assert!(secs("render") > 0.0, "the renderer ran: {done}");
    // The render thread does these one after the other: together they fit in the wall time.
    let render_thread = [
        "render",
        "detail",
        "blend",
        "render_waiting_for_input",
        "render_waiting_for_output",
    ];
    let total: f64 = render_thread.iter().map(|s| secs(s)).sum();
    assert!(
        total <= elapsed,
        "render thread {total} s > wall {elapsed} s"
    );
    let total_share: f64 = render_thread.iter().map(|s| share(s)).sum();
    assert!(
        total_share <= 100.0 + 1e-6,
        "render thread shares {total_share} %"
    );
    // Shares are the seconds over the pipeline's wall time (a little under `elapsed`).
    let render_share = share("render");
    assert!(
        render_share + 1e-9 >= 100.0 * secs("render") / elapsed,
        "render share {render_share} % vs {} s of {elapsed} s",
        secs("render")
    );
}

#[test]
fn normal_render_ends_with_a_stage_summary() {
    let dir = tempfile::tempdir().unwrap();
    let preset = preset(dir.path());
    let out = dir.path().join("out.mp4");
    let result = render_common::render(&sample(), &preset, &out, &["--frames", "..4"]);
    assert_ok(&result);
    let err = stderr(&result);
    let last = err.lines().last().unwrap_or_default();
    for part in [
        "decode ",
        "preprocess ",
        "render ",
        "detail ",
        "blend ",
        "encode ",
        "s wall; render idle waiting for input ",
    ] {
        assert!(
            last.contains(part),
            "{part:?} not in the last line {last:?}"
        );
    }
}
