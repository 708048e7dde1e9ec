//! OpenPose JSON (`*_keypoints.json`): the format OpenPose, DWPose and ControlNet's annotators
//! write, so users can bring their own keypoints instead of running the estimator.
//!
//! ```json
//! {"version": 1.3,
//!  "people": [{"person_id": [-1],
//!              "pose_keypoints_2d": [x, y, c, ...],
//!              "face_keypoints_2d": [...], "hand_left_keypoints_2d": [...],
//!              "hand_right_keypoints_2d": [...]}],
//!  "canvas_width": 512, "canvas_height": 512}
//! ```
//!
//! Written: pixel coordinates (OpenPose's convention), missing points as `0, 0, 0`, a missing
//! part as an empty array, plus `canvas_width`/`canvas_height` (ControlNet's addition).
//!
//! Read: bodies with 18 (COCO, OpenPose's `COCO` model and ControlNet) or 25 (`BODY_25`,
//! OpenPose's default; mapped to 18 by dropping MidHip and the feet) points; faces with 70 or
//! 68 points (pupils then missing); 21-point hands. Coordinates that all lie within
//! [−1.5, 1.5] are taken as normalised (comfyui_controlnet_aux writes them so) and scaled by
//! the canvas size.
//! A document may also be a JSON array of such frames (ComfyUI's `POSE_KEYPOINT`). Files
//! without `canvas_width`/`canvas_height` (OpenPose's own output) take the caller's size.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::keypoints::{
    Body, Face, Hand, Keypoint, Person, PoseFrame, BODY_POINTS, FACE_POINTS, HAND_POINTS,
};

#[derive(Debug, thiserror::Error)]
pub enum PoseJsonError {
    #[error("{path}: cannot read OpenPose JSON: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot write OpenPose JSON: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: not OpenPose JSON: {source}")]
    Parse {
        origin: String,
        source: serde_json::Error,
    },
    #[error("{origin}: people[{person}].{field} has {len} numbers; expected {expected}")]
    BadLength {
        origin: String,
        person: usize,
        field: &'static str,
        len: usize,
        expected: &'static str,
    },
    #[error("{origin}: no canvas size in the file and none given")]
    NoCanvasSize { origin: String },
}

/// BODY_25 index of each COCO-18 point (BODY_25 adds MidHip at 8 and six foot points).
const BODY25_FOR_COCO18: [usize; BODY_POINTS] = [
    0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
];

#[derive(Debug, Serialize, Deserialize)]
struct JsonPerson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    person_id: Option<serde_json::Value>,
    #[serde(default)]
    pose_keypoints_2d: Option<Vec<f32>>,
    #[serde(default)]
    face_keypoints_2d: Option<Vec<f32>>,
    #[serde(default)]
    hand_left_keypoints_2d: Option<Vec<f32>>,
    #[serde(default)]
    hand_right_keypoints_2d: Option<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pose_keypoints_3d: Option<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    face_keypoints_3d: Option<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hand_left_keypoints_3d: Option<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hand_right_keypoints_3d: Option<Vec<f32>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct JsonFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<serde_json::Value>,
    #[serde(default)]
    people: Vec<JsonPerson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    canvas_width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    canvas_height: Option<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonDocument {
    One(JsonFrame),
    Many(Vec<JsonFrame>),
}

fn flatten(points: &[Keypoint]) -> Vec<f32> {
    points
        .iter()
        .flat_map(|p| {
            if p.is_present() {
                [p.x, p.y, p.confidence]
            } else {
                [0.0, 0.0, 0.0]
            }
        })
        .collect()
}

/// Serialises one frame as OpenPose JSON (pixel coordinates).
pub fn to_json_string(frame: &PoseFrame) -> String {
    let people = frame
        .people
        .iter()
        .map(|person| JsonPerson {
            person_id: Some(serde_json::json!([-1])),
            pose_keypoints_2d: Some(
                person
                    .body
                    .as_ref()
                    .map_or(Vec::new(), |b| flatten(&b.points)),
            ),
            face_keypoints_2d: Some(
                person
                    .face
                    .as_ref()
                    .map_or(Vec::new(), |f| flatten(&f.points)),
            ),
            hand_left_keypoints_2d: Some(
                person
                    .left_hand
                    .as_ref()
                    .map_or(Vec::new(), |h| flatten(&h.points)),
            ),
            hand_right_keypoints_2d: Some(
                person
                    .right_hand
                    .as_ref()
                    .map_or(Vec::new(), |h| flatten(&h.points)),
            ),
            pose_keypoints_3d: Some(Vec::new()),
            face_keypoints_3d: Some(Vec::new()),
            hand_left_keypoints_3d: Some(Vec::new()),
            hand_right_keypoints_3d: Some(Vec::new()),
        })
        .collect();
    let doc = JsonFrame {
        version: Some(serde_json::json!(1.3)),
        people,
        canvas_width: Some(frame.width),
        canvas_height: Some(frame.height),
    };
    serde_json::to_string(&doc).expect("pose JSON serialisation cannot fail")
}

/// Writes `frame` to `path` as OpenPose JSON.
pub fn write_json_file(path: &Path, frame: &PoseFrame) -> Result<(), PoseJsonError> {
    std::fs::write(path, to_json_string(frame)).map_err(|source| PoseJsonError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses an OpenPose JSON document (one frame, or an array of frames). `default_size` is the
/// canvas size for files that do not state one; `origin` names the source in errors.
pub fn parse_json(
    text: &str,
    default_size: Option<(u32, u32)>,
    origin: &str,
) -> Result<Vec<PoseFrame>, PoseJsonError> {
    let doc: JsonDocument = serde_json::from_str(text).map_err(|source| PoseJsonError::Parse {
        origin: origin.to_string(),
        source,
    })?;
    let frames = match doc {
        JsonDocument::One(f) => vec![f],
        JsonDocument::Many(v) => v,
    };
    frames
        .into_iter()
        .map(|f| decode_frame(f, default_size, origin))
        .collect()
}

/// Reads an OpenPose JSON file (see [`parse_json`]).
pub fn read_json_file(
    path: &Path,
    default_size: Option<(u32, u32)>,
) -> Result<Vec<PoseFrame>, PoseJsonError> {
    let text = std::fs::read_to_string(path).map_err(|source| PoseJsonError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_json(&text, default_size, &path.display().to_string())
}

fn chunk(values: &[f32]) -> Vec<Keypoint> {
    values
        .chunks_exact(3)
        .map(|c| {
            if c[2] > 0.0 {
                Keypoint::new(c[0], c[1], c[2])
            } else {
                Keypoint::MISSING
            }
        })
        .collect()
}

fn decode_frame(
    frame: JsonFrame,
    default_size: Option<(u32, u32)>,
    origin: &str,
) -> Result<PoseFrame, PoseJsonError> {
    let (width, height) = match (frame.canvas_width, frame.canvas_height, default_size) {
        (Some(w), Some(h), _) => (w, h),
        (_, _, Some(size)) => size,
        _ => {
            return Err(PoseJsonError::NoCanvasSize {
                origin: origin.to_string(),
            })
        }
    };
    let bad = |person: usize, field: &'static str, len: usize, expected: &'static str| {
        PoseJsonError::BadLength {
            origin: origin.to_string(),
            person,
            field,
            len,
            expected,
        }
    };

    let mut people = Vec::with_capacity(frame.people.len());
    for (i, p) in frame.people.iter().enumerate() {
        let body = match p.pose_keypoints_2d.as_deref() {
            None | Some([]) => None,
            Some(v) if v.len() == BODY_POINTS * 3 => Some(Body {
                points: to_array(chunk(v)),
            }),
            Some(v) if v.len() == 25 * 3 => {
                let all = chunk(v);
                Some(Body {
                    points: BODY25_FOR_COCO18.map(|j| all[j]),
                })
            }
            Some(v) => {
                return Err(bad(
                    i,
                    "pose_keypoints_2d",
                    v.len(),
                    "54 (COCO-18) or 75 (BODY_25)",
                ))
            }
        };
        let face = match p.face_keypoints_2d.as_deref() {
            None | Some([]) => None,
            Some(v) if v.len() == FACE_POINTS * 3 || v.len() == 68 * 3 => {
                let mut pts = chunk(v);
                pts.resize(FACE_POINTS, Keypoint::MISSING);
                Some(Face {
                    points: to_array(pts),
                })
            }
            Some(v) => {
                return Err(bad(
                    i,
                    "face_keypoints_2d",
                    v.len(),
                    "210 (70 points) or 204 (68 points)",
                ))
            }
        };
        let hand = |field: &'static str, v: &Option<Vec<f32>>| match v.as_deref() {
            None | Some([]) => Ok(None),
            Some(v) if v.len() == HAND_POINTS * 3 => Ok(Some(Hand {
                points: to_array(chunk(v)),
            })),
            Some(v) => Err(bad(i, field, v.len(), "63 (21 points)")),
        };
        let left_hand = hand("hand_left_keypoints_2d", &p.hand_left_keypoints_2d)?;
        let right_hand = hand("hand_right_keypoints_2d", &p.hand_right_keypoints_2d)?;
        people.push(Person {
            body,
            left_hand,
            right_hand,
            face,
        });
    }

    let mut out = PoseFrame {
        width,
        height,
        people,
    };
    if is_normalised(&out) {
        scale_points(&mut out, width as f32, height as f32);
    }
    Ok(out)
}

fn to_array<const N: usize>(v: Vec<Keypoint>) -> [Keypoint; N] {
    std::array::from_fn(|i| v.get(i).copied().unwrap_or(Keypoint::MISSING))
}

fn all_points_mut(frame: &mut PoseFrame) -> impl Iterator<Item = &mut Keypoint> {
    frame.people.iter_mut().flat_map(|p| {
        let body = p.body.iter_mut().flat_map(|b| b.points.iter_mut());
        let face = p.face.iter_mut().flat_map(|f| f.points.iter_mut());
        let lh = p.left_hand.iter_mut().flat_map(|h| h.points.iter_mut());
        let rh = p.right_hand.iter_mut().flat_map(|h| h.points.iter_mut());
        body.chain(face).chain(lh).chain(rh)
    })
}

/// Largest coordinate magnitude still read as normalised. comfyui_controlnet_aux's
/// `is_normalized` uses 1, but annotators also write points a little outside the canvas
/// (a hand leaving the frame); pixel coordinates of a real pose exceed this at once.
const NORMALISED_LIMIT: f32 = 1.5;

/// Whether every present point lies within [−1.5, 1.5]² (normalised coordinates).
fn is_normalised(frame: &PoseFrame) -> bool {
    let mut any = false;
    for p in frame.people.iter().flat_map(|p| {
        let body = p.body.iter().flat_map(|b| b.points.iter());
        let face = p.face.iter().flat_map(|f| f.points.iter());
        let lh = p.left_hand.iter().flat_map(|h| h.points.iter());
        let rh = p.right_hand.iter().flat_map(|h| h.points.iter());
        body.chain(face).chain(lh).chain(rh)
    }) {
        if p.is_present() {
            any = true;
            if p.x.abs() > NORMALISED_LIMIT || p.y.abs() > NORMALISED_LIMIT {
                return false;
            }
        }
    }
    any
}

fn scale_points(frame: &mut PoseFrame, sx: f32, sy: f32) {
    for p in all_points_mut(frame) {
        if p.is_present() {
            p.x *= sx;
            p.y *= sy;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_frame() -> PoseFrame {
        let mut body = [Keypoint::MISSING; BODY_POINTS];
        for (i, p) in body.iter_mut().enumerate() {
            if i != 9 {
                *p = Keypoint::new(10.0 + i as f32, 200.0 - i as f32, 0.5 + i as f32 / 100.0);
            }
        }
        let hand = Hand {
            points: std::array::from_fn(|i| Keypoint::new(i as f32 + 0.25, 3.0, 0.9)),
        };
        let face = Face {
            points: std::array::from_fn(|i| Keypoint::new(100.0 + i as f32, 50.5, 0.75)),
        };
        PoseFrame {
            width: 640,
            height: 360,
            people: vec![
                Person {
                    body: Some(Body { points: body }),
                    left_hand: Some(hand),
                    right_hand: None,
                    face: Some(face),
                },
                Person {
                    body: Some(Body { points: body }),
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn write_then_read_round_trips() {
        let frame = sample_frame();
        let text = to_json_string(&frame);
        let back = parse_json(&text, None, "test").unwrap();
        assert_eq!(back, vec![frame]);
    }

    #[test]
    fn written_json_has_openpose_fields() {
        let text = to_json_string(&sample_frame());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["version"], serde_json::json!(1.3));
        assert_eq!(v["canvas_width"], 640);
        let p0 = &v["people"][0];
        assert_eq!(p0["pose_keypoints_2d"].as_array().unwrap().len(), 54);
        assert_eq!(p0["hand_right_keypoints_2d"].as_array().unwrap().len(), 0);
        // Missing knee written as 0, 0, 0.
        assert_eq!(p0["pose_keypoints_2d"][27], 0.0);
        assert_eq!(p0["pose_keypoints_2d"][29], 0.0);
    }

    #[test]
    fn body25_maps_to_coco18() {
        let mut v = vec![0.0f32; 75];
        for j in 0..25 {
            v[j * 3] = j as f32 * 10.0 + 1.0;
            v[j * 3 + 1] = 5.0;
            v[j * 3 + 2] = 0.8;
        }
        let text =
            serde_json::json!({"version": 1.3, "people": [{"pose_keypoints_2d": v}]}).to_string();
        let frames = parse_json(&text, Some((100, 100)), "body25").unwrap();
        let body = frames[0].people[0].body.unwrap();
        // RHip is BODY_25 index 9, LEar 18; MidHip (8) is dropped.
        assert_eq!(body.points[8].x, 91.0);
        assert_eq!(body.points[17].x, 181.0);
        assert_eq!(body.points[7].x, 71.0);
        assert_eq!((frames[0].width, frames[0].height), (100, 100));
    }

    #[test]
    fn normalised_coordinates_are_scaled_and_arrays_read() {
        let mut v = vec![0.0f32; 54];
        v[0] = 0.5;
        v[1] = 0.25;
        v[2] = 1.0;
        let doc = serde_json::json!([
            {"people": [{"pose_keypoints_2d": v, "face_keypoints_2d": null}],
             "canvas_width": 200, "canvas_height": 100},
            {"people": [], "canvas_width": 200, "canvas_height": 100}
        ]);
        let frames = parse_json(&doc.to_string(), None, "comfy").unwrap();
        assert_eq!(frames.len(), 2);
        let nose = frames[0].people[0].body.unwrap().points[0];
        assert_eq!((nose.x, nose.y), (100.0, 25.0));
        assert!(frames[0].people[0].face.is_none());
    }

    #[test]
    fn errors_name_the_origin_and_field() {
        let doc = serde_json::json!({"people": [{"hand_left_keypoints_2d": [1.0, 2.0]}],
                                     "canvas_width": 4, "canvas_height": 4});
        let err = parse_json(&doc.to_string(), None, "x.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.json") && err.contains("hand_left_keypoints_2d"),
            "{err}"
        );
        let err = parse_json("{\"people\": []}", None, "y.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("y.json") && err.contains("canvas size"),
            "{err}"
        );
        assert!(parse_json("not json", None, "z").is_err());
    }

    #[test]
    fn sixty_eight_point_faces_get_missing_pupils() {
        let face: Vec<f32> = (0..68).flat_map(|i| [i as f32 + 2.0, 3.0, 1.0]).collect();
        let doc = serde_json::json!({"people": [{"face_keypoints_2d": face}],
                                     "canvas_width": 100, "canvas_height": 100});
        let frames = parse_json(&doc.to_string(), None, "f").unwrap();
        let face = frames[0].people[0].face.unwrap();
        assert_eq!(face.points[67].x, 69.0);
        assert!(!face.points[68].is_present() && !face.points[69].is_present());
    }
}
