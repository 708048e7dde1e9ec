//! OpenPose-format keypoints: the data types, ControlNet-exact drawing and the JSON format.
pub mod draw;
pub mod json;
pub mod json_stage;
pub mod keypoints;
pub mod raster;

pub use draw::{draw_pose_map, DrawParts};
pub use keypoints::{Body, BodyPart, Face, Hand, Keypoint, Person, PoseFrame};

/// Poses the preprocessor tests share.
#[cfg(test)]
pub(crate) mod test_poses {
    use super::{Body, Face, Hand, Keypoint, Person, PoseFrame};

    /// A person with body, face and right hand on a 64 × 48 frame.
    pub fn full_person() -> PoseFrame {
        let mut pose = PoseFrame::empty(64, 48);
        let mut body = Body {
            points: [Keypoint::MISSING; 18],
        };
        body.points[1] = Keypoint::new(32.0, 20.0, 1.0);
        body.points[2] = Keypoint::new(20.0, 22.0, 1.0);
        pose.people.push(Person {
            body: Some(body),
            face: Some(Face {
                points: std::array::from_fn(|i| {
                    Keypoint::new(28.0 + (i % 8) as f32, 6.0 + (i / 8) as f32, 1.0)
                }),
            }),
            right_hand: Some(Hand {
                points: std::array::from_fn(|i| {
                    Keypoint::new(
                        50.0 + (i % 5) as f32 * 2.0,
                        30.0 + (i / 5) as f32 * 2.0,
                        1.0,
                    )
                }),
            }),
            ..Person::default()
        });
        pose
    }
}
