//! Face and hand detailing inside `rotoscope render`, through the real binary with the tiny
//! random models of tests/fixtures/pipeline (128² renders, the fixture's `controlnet_a` as
//! the openpose ControlNet) and hand-made OpenPose JSON keypoints (`--pose-json`): one
//! person whose face and hands move right by 1.5 rendered pixels per frame; frame 7 has no
//! face (a normal frame: it is just not detailed). Batches of 4 frames sharing 2.
//!
//! * detail on vs. off: every pixel outside the union of the paste masks is bit for bit the
//!   same, most pixels inside changed, and the regions (crops) follow the keypoints;
//! * one seed per track, the same on every frame;
//! * a detailed render interrupted with Ctrl-C and resumed is byte-identical to an
//!   uninterrupted one, and the resume runs no detail pass for finished batches (`detail`
//!   JSON events); a work directory without detailed frames (older format) is detailed
//!   again, with the same result;
//! * user mistakes in the `detail:` section exit with 2 and name the preset field;
//! * without `--pose-json`, MediaPipe finds the faces detailing needs although
//!   `preprocess.pose` does not draw them (real models, `$ROTOSCOPE_MODELS`).

mod render_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use render_common::*;
use rotoscope::app::resolve::detailer_config;
use rotoscope::detail::RegionPlanner;
use rotoscope::preprocess::openpose::json::{read_json_file, to_json_string};
use rotoscope::preprocess::openpose::{Keypoint, PoseFrame};
use rotoscope::preset::Preset;
use rotoscope::video::VideoReader;

/// Frames rendered: 4 batches ([0,4) [2,6) [4,8) [6,10)).
const FRAMES: u64 = 10;
const FRAME_ARG: &str = "..10";
/// The source is 512², rendered at 128²: keypoints shift 6 source pixels per frame.
const SOURCE: u32 = 512;
const SIZE: u32 = 128;
const SHIFT: f32 = 6.0;
const FACELESS_FRAME: u64 = 7;

fn sample() -> PathBuf {
    repo_path("samples/astronaut.mp4")
}

const DETAIL: &str = "detail:
  face: {enabled: true, steps: 6, resolution: 64, min_size: 24, feather: 4, prompt: a detailed face}
  hands: {enabled: true, steps: 6, resolution: 48, min_size: 24, feather: 4}
";

/// The tiny preset with an openpose ControlNet, batches of 4 sharing 2, and `detail`.
fn preset_text(detail: &str) -> String {
    let net = fixture_pipeline().join("controlnet_a");
    tiny_preset(
        SIZE,
        "",
        &format!(
            "controlnets:\n  - {{type: openpose, model: {}, scale: 0.8}}\nbatch: {{frames: 4, overlap: 2}}\n{detail}",
            net.display()
        ),
    )
}

fn write_preset(dir: &Path, name: &str, detail: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, preset_text(detail)).unwrap();
    path
}

/// The person of tests/fixtures/detail (a 128² canvas) scaled to the 512² source and moved
/// right by `SHIFT` per frame; frame `FACELESS_FRAME` has no face.
fn pose_of_frame(index: u64) -> PoseFrame {
    let path = repo_path("tests/fixtures/detail/person_keypoints.json");
    let mut pose = read_json_file(&path, Some((128, 128))).unwrap().remove(0);
    let scale = SOURCE as f32 / 128.0;
    let dx = SHIFT * index as f32;
    let map = |p: &mut Keypoint| {
        if p.is_present() {
            *p = Keypoint::new(p.x * scale + dx, p.y * scale, p.confidence);
        }
    };
    pose.width = SOURCE;
    pose.height = SOURCE;
    for person in &mut pose.people {
        if let Some(b) = &mut person.body {
            b.points.iter_mut().for_each(map);
        }
        if let Some(f) = &mut person.face {
            f.points.iter_mut().for_each(map);
        }
        for h in [&mut person.left_hand, &mut person.right_hand]
            .into_iter()
            .flatten()
        {
            h.points.iter_mut().for_each(map);
        }
        if index == FACELESS_FRAME {
            person.face = None;
        }
    }
    pose
}

fn write_poses(dir: &Path) -> PathBuf {
    let poses = dir.join("poses");
    std::fs::create_dir_all(&poses).unwrap();
    for i in 0..FRAMES {
        std::fs::write(
            poses.join(format!("pose_{i:06}_keypoints.json")),
            to_json_string(&pose_of_frame(i)),
        )
        .unwrap();
    }
    poses
}

/// A crop: x, y, width, height.
type Crop = (u32, u32, u32, u32);

/// One region of a `detail` event.
#[derive(Debug, Clone, PartialEq)]
struct EventRegion {
    frame: u64,
    track: u64,
    kind: String,
    seed: u64,
    rect: Crop,
}

/// One `detail` event: batch, restored, inpainted, regions.
#[derive(Debug, Clone)]
struct DetailEvent {
    batch: u64,
    restored: bool,
    inpainted: u64,
    regions: Vec<EventRegion>,
}

fn detail_events(stdout: &[u8]) -> Vec<DetailEvent> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "detail")
        .map(|e| DetailEvent {
            batch: e["batch"].as_u64().unwrap(),
            restored: e["restored"].as_bool().unwrap(),
            inpainted: e["inpainted"].as_u64().unwrap(),
            regions: e["regions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| EventRegion {
                    frame: r["frame"].as_u64().unwrap(),
                    track: r["track"].as_u64().unwrap(),
                    kind: r["kind"].as_str().unwrap().to_string(),
                    seed: r["seed"].as_u64().unwrap(),
                    rect: (
                        r["x"].as_u64().unwrap() as u32,
                        r["y"].as_u64().unwrap() as u32,
                        r["width"].as_u64().unwrap() as u32,
                        r["height"].as_u64().unwrap() as u32,
                    ),
                })
                .collect(),
        })
        .collect()
}

/// Renders to a PNG directory with `--json`; returns the detail events.
fn render_json(
    preset: &Path,
    poses: &Path,
    output: &Path,
    work: &Path,
    frames: &str,
) -> Vec<DetailEvent> {
    let out = render(
        &sample(),
        preset,
        output,
        &[
            "--frames",
            frames,
            "--pose-json",
            &poses.display().to_string(),
            "--work-dir",
            &work.display().to_string(),
            "--json",
        ],
    );
    assert_success(&out);
    detail_events(&out.stdout)
}

/// Every region each frame was detailed with, by frame, from the events (overlap frames are
/// reported by both batches, identically).
fn regions_by_frame(events: &[DetailEvent]) -> BTreeMap<u64, Vec<EventRegion>> {
    let mut by_frame: BTreeMap<u64, Vec<EventRegion>> = BTreeMap::new();
    let mut seen_in: BTreeMap<u64, u64> = BTreeMap::new();
    for event in events {
        let mut this: BTreeMap<u64, Vec<EventRegion>> = BTreeMap::new();
        for r in &event.regions {
            this.entry(r.frame).or_default().push(r.clone());
        }
        for (frame, regions) in this {
            match by_frame.get(&frame) {
                Some(earlier) => assert_eq!(
                    earlier, &regions,
                    "frame {frame}: batches {} and {} disagree",
                    seen_in[&frame], event.batch
                ),
                None => {
                    by_frame.insert(frame, regions);
                    seen_in.insert(frame, event.batch);
                }
            }
        }
    }
    by_frame
}

/// `true` where some region of each frame is pasted with a weight above 0, recomputed with
/// the library's region planner from the same keypoints and preset.
fn paste_masks(preset: &Path) -> (Vec<Vec<bool>>, Vec<Vec<Crop>>) {
    let preset = Preset::load(preset).unwrap();
    let fps = VideoReader::open(sample()).unwrap().info().fps.as_f64();
    let config = detailer_config(&preset, fps).unwrap().unwrap();
    let mut planner = RegionPlanner::new(config);
    let mut unions = Vec::new();
    let mut rects = Vec::new();
    for i in 0..FRAMES {
        let mut union = vec![false; (SIZE * SIZE) as usize];
        let mut frame_rects = Vec::new();
        for region in planner.plan_regions(i, &pose_of_frame(i), SIZE, SIZE) {
            let Some(mask) = planner.paste_weights(&region, SIZE, SIZE) else {
                continue;
            };
            let r = region.rect;
            frame_rects.push((r.x, r.y, r.width, r.height));
            for y in 0..r.height {
                for x in 0..r.width {
                    if mask.get(x, y) > 0.0 {
                        union[((r.y + y) * SIZE + r.x + x) as usize] = true;
                    }
                }
            }
        }
        unions.push(union);
        rects.push(frame_rects);
    }
    (unions, rects)
}

#[test]
fn detailing_changes_only_the_masked_regions_which_follow_the_keypoints() {
    let dir = tempfile::tempdir().unwrap();
    let poses = write_poses(dir.path());
    let plain = write_preset(dir.path(), "plain.yaml", "");
    let detailed = write_preset(dir.path(), "detailed.yaml", DETAIL);

    let off = dir.path().join("off/");
    let events = render_json(
        &plain,
        &poses,
        &off,
        &dir.path().join("off.work"),
        FRAME_ARG,
    );
    assert!(events.is_empty(), "no detail events without detailing");
    let on = dir.path().join("on/");
    let events = render_json(
        &detailed,
        &poses,
        &on,
        &dir.path().join("on.work"),
        FRAME_ARG,
    );
    assert_eq!(events.len(), 4, "one detail event per batch");
    assert!(events.iter().all(|e| !e.restored));
    let passes: u64 = events.iter().map(|e| e.inpainted).sum();
    // 4 batches of 4 frames, 3 regions each, less the faceless frame's face (in 2 batches).
    assert_eq!(passes, 16 * 3 - 2);

    let (off, on) = (decoded_pngs(&off), decoded_pngs(&on));
    assert_eq!(off.len(), FRAMES as usize);
    assert_eq!(on.len(), FRAMES as usize);
    let (unions, rects) = paste_masks(&detailed);
    let by_frame = regions_by_frame(&events);
    for i in 0..FRAMES as usize {
        // The planner sees what the render's detailer saw: the same crops.
        let reported: Vec<_> = by_frame[&(i as u64)].iter().map(|r| r.rect).collect();
        assert_eq!(reported, rects[i], "frame {i}");
        let (mut inside, mut changed) = (0usize, 0usize);
        for (n, (a, b)) in off[i].pixels().zip(on[i].pixels()).enumerate() {
            if unions[i][n] {
                inside += 1;
                changed += (a != b) as usize;
            } else {
                assert_eq!(
                    a,
                    b,
                    "frame {i}: pixel ({}, {}) outside every mask changed",
                    n as u32 % SIZE,
                    n as u32 / SIZE
                );
            }
        }
        eprintln!("frame {i}: {changed} of {inside} masked pixels changed");
        assert!(inside > 500, "frame {i}: {inside} masked pixels");
        assert!(
            changed * 10 >= inside * 6,
            "frame {i}: only {changed} of {inside} masked pixels changed"
        );
    }

    // The regions follow the keypoints: each crop holds its part's keypoints (scaled to
    // the render), and the crops move right with the person.
    let scale = SIZE as f32 / SOURCE as f32;
    for (&frame, regions) in &by_frame {
        let pose = pose_of_frame(frame);
        let person = &pose.people[0];
        let kinds: Vec<&str> = regions.iter().map(|r| r.kind.as_str()).collect();
        if frame == FACELESS_FRAME {
            assert_eq!(kinds, ["left hand", "right hand"], "frame {frame}");
        } else {
            assert_eq!(kinds, ["face", "left hand", "right hand"], "frame {frame}");
        }
        for r in regions {
            let points: Vec<Keypoint> = match r.kind.as_str() {
                "face" => person.face.as_ref().unwrap().points.to_vec(),
                "left hand" => person.left_hand.as_ref().unwrap().points.to_vec(),
                _ => person.right_hand.as_ref().unwrap().points.to_vec(),
            };
            let (x, y, w, h) = r.rect;
            for p in points.iter().filter(|p| p.is_present()) {
                let (px, py) = (p.x * scale, p.y * scale);
                assert!(
                    px >= x as f32
                        && px <= (x + w) as f32
                        && py >= y as f32
                        && py <= (y + h) as f32,
                    "frame {frame}: {} keypoint ({px}, {py}) outside its crop {:?}",
                    r.kind,
                    r.rect
                );
            }
        }
    }
    for kind in ["face", "left hand", "right hand"] {
        let x_of = |frame: u64| {
            by_frame[&frame]
                .iter()
                .find(|r| r.kind == kind)
                .map(|r| r.rect.0 as f32 + r.rect.2 as f32 / 2.0)
                .unwrap()
        };
        let moved = x_of(FRAMES - 1) - x_of(0);
        eprintln!(
            "{kind}: the crop moved {moved} px over {} frames",
            FRAMES - 1
        );
        // 9 frames × 1.5 px; the smoothing may lag a little behind.
        assert!(
            (7.0..=15.0).contains(&moved),
            "{kind}: the crop moved {moved} px, the keypoints 13.5 px"
        );
    }
}

#[test]
fn every_track_keeps_its_seed_on_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let poses = write_poses(dir.path());
    let detailed = write_preset(dir.path(), "detailed.yaml", DETAIL);
    // Fewer frames suffice: the first two batches.
    let out = render(
        &sample(),
        &detailed,
        &dir.path().join("o/"),
        &[
            "--frames",
            "..6",
            "--pose-json",
            &poses.display().to_string(),
            "--json",
        ],
    );
    assert_success(&out);
    let events = detail_events(&out.stdout);
    assert_eq!(events.len(), 2);
    let mut seeds: BTreeMap<u64, (String, u64)> = BTreeMap::new();
    let mut frames_of: BTreeMap<u64, usize> = BTreeMap::new();
    for r in events.iter().flat_map(|e| &e.regions) {
        let known = seeds.entry(r.track).or_insert((r.kind.clone(), r.seed));
        assert_eq!(
            known,
            &(r.kind.clone(), r.seed),
            "track {} changed kind or seed on frame {}",
            r.track,
            r.frame
        );
        *frames_of.entry(r.track).or_default() += 1;
    }
    // Three tracks (face, both hands) for the whole clip, each with its own seed.
    assert_eq!(seeds.len(), 3, "{seeds:?}");
    let distinct: std::collections::BTreeSet<u64> = seeds.values().map(|(_, s)| *s).collect();
    assert_eq!(distinct.len(), 3);
    // 2 batches × 4 frames each.
    assert!(frames_of.values().all(|&n| n == 8), "{frames_of:?}");
}

/// Detail manifests written (batches whose detailed frames are kept).
fn detailed_batches(work: &Path) -> usize {
    std::fs::read_dir(work)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join("detailed/manifest.json").is_file())
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn an_interrupted_detailed_render_resumes_byte_identical_without_detailing_again() {
    let dir = tempfile::tempdir().unwrap();
    let poses = write_poses(dir.path());
    let preset = write_preset(dir.path(), "detailed.yaml", DETAIL);
    let poses_arg = poses.display().to_string();

    let whole = dir.path().join("whole/");
    let events = render_json(
        &preset,
        &poses,
        &whole,
        &dir.path().join("whole.work"),
        FRAME_ARG,
    );
    assert_eq!(events.len(), 4);

    // Ctrl-C once the first batch is detailed and kept.
    let resumed = dir.path().join("resumed/");
    let work = dir.path().join("resumed.work");
    let work_arg = work.display().to_string();
    let log = dir.path().join("interrupted.log");
    let mut child = render_command(
        &sample(),
        &preset,
        &resumed,
        &[
            "--frames",
            FRAME_ARG,
            "--pose-json",
            &poses_arg,
            "--work-dir",
            &work_arg,
        ],
    )
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "render ended ({status}) before a batch was detailed: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if detailed_batches(&work) >= 1 {
            // SAFETY: signalling our own child process, which has not been waited for.
            assert_eq!(
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
                0
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "render too slow"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    let kept = detailed_batches(&work);
    eprintln!("interrupted with {kept} detailed batch(es) kept");
    assert!((1..4).contains(&kept), "{kept} detailed batches kept");

    // Resumed: finished batches come back detailed, only tracked; the rest is detailed.
    let events = render_json(&preset, &poses, &resumed, &work, FRAME_ARG);
    assert_eq!(events.len(), 4);
    for e in &events {
        let finished = (e.batch as usize) < kept;
        assert_eq!(e.restored, finished, "batch {}", e.batch);
        if finished {
            assert_eq!(e.inpainted, 0, "batch {} was detailed again", e.batch);
        } else {
            assert!(e.inpainted > 0);
        }
    }
    let (a, b) = (png_frames(&whole), png_frames(&resumed));
    assert_eq!(a.len(), FRAMES as usize);
    assert_eq!(a.len(), b.len());
    for ((name_a, bytes_a), (name_b, bytes_b)) in a.iter().zip(&b) {
        assert_eq!(name_a, name_b);
        assert!(bytes_a == bytes_b, "{name_a} differs after resuming");
    }
}

#[test]
fn a_work_directory_without_detailed_frames_is_detailed_again() {
    let dir = tempfile::tempdir().unwrap();
    let poses = write_poses(dir.path());
    let preset = write_preset(dir.path(), "detailed.yaml", DETAIL);
    let poses_arg = poses.display().to_string();
    let whole = dir.path().join("whole/");
    render_json(
        &preset,
        &poses,
        &whole,
        &dir.path().join("whole.work"),
        "..6",
    );

    // Ctrl-C after the first batch is rendered; its detailed frames are then removed, as in
    // a work directory written before they were kept.
    let resumed = dir.path().join("resumed/");
    let work = dir.path().join("resumed.work");
    let mut child = render_command(
        &sample(),
        &preset,
        &resumed,
        &[
            "--frames",
            "..6",
            "--pose-json",
            &poses_arg,
            "--work-dir",
            &work.display().to_string(),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let started = Instant::now();
    while detailed_batches(&work) < 1 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "render ended before a batch was detailed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "render too slow"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: signalling our own child process, which has not been waited for.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    std::fs::remove_dir_all(work.join("batch_0000/detailed")).unwrap();

    let out = render(
        &sample(),
        &preset,
        &resumed,
        &[
            "--frames",
            "..6",
            "--pose-json",
            &poses_arg,
            "--work-dir",
            &work.display().to_string(),
            "--json",
        ],
    );
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("resuming: 1 finished batch(es)"),
        "{stderr}"
    );
    let events = detail_events(&out.stdout);
    assert!(!events[0].restored && events[0].inpainted > 0);
    let (a, b) = (png_frames(&whole), png_frames(&resumed));
    assert_eq!(a.len(), 6);
    assert_eq!(a.len(), b.len());
    for ((name_a, bytes_a), (name_b, bytes_b)) in a.iter().zip(&b) {
        assert_eq!(name_a, name_b);
        assert!(bytes_a == bytes_b, "{name_a} differs after detailing again");
    }
}

#[test]
fn detail_sections_the_preset_cannot_serve_exit_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let poses = write_poses(dir.path());
    let poses_arg = poses.display().to_string();
    let run = |preset_text: String, name: &str| {
        let preset = dir.path().join(name);
        std::fs::write(&preset, preset_text).unwrap();
        let output = dir.path().join(format!("{name}.out/"));
        let out = render(
            &sample(),
            &preset,
            &output,
            &["--frames", "..4", "--pose-json", &poses_arg],
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(!output.exists(), "{name}: no output");
        assert!(
            !PathBuf::from(format!("{}.out.work", dir.path().join(name).display())).exists(),
            "{name}: no work directory"
        );
        stderr
    };
    // Hands guided by the openpose ControlNet, and the preset has none.
    let stderr = run(
        tiny_preset(
            SIZE,
            "",
            "detail:\n  hands: {enabled: true, steps: 4, resolution: 48}\n",
        ),
        "no-openpose.yaml",
    );
    assert!(
        stderr.contains("detail.hands.controlnet") && stderr.contains("openpose ControlNet"),
        "{stderr}"
    );
    // A value out of range: located in the file.
    let stderr = run(
        preset_text("detail:\n  face: {enabled: true, denoise: 0}\n"),
        "bad-denoise.yaml",
    );
    assert!(
        stderr.contains("detail.face.denoise") && stderr.contains("bad-denoise.yaml:"),
        "{stderr}"
    );
}

#[test]
fn mediapipe_estimates_the_face_detailing_needs_even_when_the_map_does_not_draw_it() {
    // The real MediaPipe models (scripts/fetch-models.sh or $ROTOSCOPE_MODELS).
    models_dir();
    let dir = tempfile::tempdir().unwrap();
    // Body only on the openpose map, no openpose ControlNet at all; faces detailed.
    let preset = dir.path().join("face.yaml");
    std::fs::write(
        &preset,
        tiny_preset(
            SIZE,
            "",
            "batch: {frames: 4, overlap: 0}\n\
             preprocess:\n  pose: {body: true, hands: false, face: false}\n\
             detail:\n  face: {enabled: true, steps: 4, resolution: 64, min_size: 24, feather: 4}\n",
        ),
    )
    .unwrap();
    let out = render(
        &sample(),
        &preset,
        &dir.path().join("o/"),
        &["--frames", "..4", "--json"],
    );
    assert_success(&out);
    let events = detail_events(&out.stdout);
    assert_eq!(events.len(), 1);
    // The astronaut's face is found on every frame (MediaPipe's 468 points → OpenPose's 70).
    let faces: Vec<u64> = events[0]
        .regions
        .iter()
        .filter(|r| r.kind == "face")
        .map(|r| r.frame)
        .collect();
    assert_eq!(faces, [0, 1, 2, 3], "{:?}", events[0].regions);
    assert_eq!(events[0].inpainted, 4);
}
