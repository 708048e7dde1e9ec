//! The bundled presets' `detail:` sections: anime details faces and hands, watercolor faces
//! only, the fast presets (lineart-ink, smoke) nothing; what is on, the rest of each preset
//! can serve (an openpose ControlNet for hands).

use std::path::Path;

use rotoscope::detail::{check_preset, DetailSettings};
use rotoscope::preset::Preset;

fn load(name: &str) -> Preset {
    Preset::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("presets/{name}.yaml")))
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn styled_presets_detail_and_fast_presets_do_not() {
    let anime = load("anime");
    assert!(anime.detail.face.enabled && anime.detail.hands.enabled);
    assert_eq!(anime.detail.face.denoise, 0.4);
    assert!(anime.detail.hands.controlnet);
    let watercolor = load("watercolor");
    assert!(watercolor.detail.face.enabled && !watercolor.detail.hands.enabled);
    assert_eq!(watercolor.detail.face.denoise, 0.4);
    // Watercolor's map does not draw the face; the detailer still gets it (see
    // render::stages::preprocessors).
    assert!(!watercolor.preprocess.pose.face);
    for preset in [&anime, &watercolor] {
        preset.detail.validate().unwrap();
        check_preset(preset).unwrap();
        for s in [&preset.detail.face, &preset.detail.hands] {
            assert!((0.35..=0.6).contains(&s.denoise));
        }
    }
    for name in ["lineart-ink", "smoke"] {
        let preset = load(name);
        assert!(!preset.detail.any_enabled(), "{name} details");
        assert_eq!(preset.detail, DetailSettings::default(), "{name}");
    }
}

#[test]
fn hands_with_the_controlnet_need_an_openpose_controlnet() {
    let mut preset = load("anime");
    preset
        .controlnets
        .retain(|c| c.kind != rotoscope::preset::ControlKind::Openpose);
    let err = check_preset(&preset).unwrap_err();
    assert!(err.is_bad_input());
    assert!(err.to_string().contains("detail.hands.controlnet"), "{err}");
    preset.detail.hands.controlnet = false;
    check_preset(&preset).unwrap();
}
