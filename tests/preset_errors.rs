//! Preset errors name the file, line, column and field; command-line overrides replace
//! preset fields.

use rotoscope::preset::{Preset, PresetError, PresetOverrides};

/// Loads `yaml` from a real file, as users do, and returns the error's text.
fn load_error(yaml: &str) -> (String, PresetError) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("style.yaml");
    std::fs::write(&path, yaml).unwrap();
    let err = Preset::load(&path).unwrap_err();
    (path.display().to_string(), err)
}

#[test]
fn unknown_key_gives_file_line_column_and_key() {
    let yaml = "model:\n  base: a/b\nprompt: cat\nsampler:\n  steps: 20\n  cfg: 7\n";
    let (file, err) = load_error(yaml);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{file}:6:3: sampler: unknown field `cfg`")),
        "{text}"
    );
    // The message lists what is allowed, so the typo is easy to fix.
    assert!(text.contains("`cfg_scale`"), "{text}");
    match err {
        PresetError::Parse {
            line,
            column,
            field,
            ..
        } => {
            assert_eq!((line, column), (6, 3));
            assert_eq!(field, "sampler");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn unknown_top_level_key_and_nested_list_key() {
    let (file, err) = load_error("model: {base: a/b}\nprompt: cat\nstyle: anime\n");
    assert_eq!(
        err.to_string().split(", expected").next().unwrap(),
        format!("{file}:3:1: unknown field `style`")
    );
    let yaml = "model: {base: a/b}\nprompt: cat\ncontrolnets:\n  - type: openpose\n    model: x/y\n    weight: 1\n";
    let (file, err) = load_error(yaml);
    assert!(
        err.to_string().starts_with(&format!(
            "{file}:6:5: controlnets[0]: unknown field `weight`"
        )),
        "{err}"
    );
}

#[test]
fn type_and_range_errors_point_at_the_value() {
    let cases = [
        (
            "sampler:\n  steps: many\n",
            "4:10",
            "sampler.steps",
            "invalid type",
        ),
        (
            "sampler:\n  cfg_scale: 99\n",
            "4:14",
            "sampler.cfg_scale",
            "between 0 and 30",
        ),
        (
            "sampler:\n  scheduler: plms\n",
            "4:14",
            "sampler.scheduler",
            "unknown variant `plms`",
        ),
        (
            "resolution: {width: 500, height: 512}\n",
            "3:21",
            "resolution.width",
            "multiple of 8",
        ),
        (
            "batch:\n  frames: 250\n",
            "4:3",
            "batch",
            "frames must be between 1 and 199",
        ),
        (
            "output:\n  crf: 70\n",
            "4:8",
            "output.crf",
            "between 0 and 51",
        ),
    ];
    for (tail, location, field, message) in cases {
        let (file, err) = load_error(&format!("model: {{base: a/b}}\nprompt: cat\n{tail}"));
        let text = err.to_string();
        let head = format!("{file}:{location}: {field}: ");
        assert!(text.starts_with(&head), "expected {head:?}…, got {text:?}");
        assert!(text.contains(message), "{message:?} not in {text:?}");
    }
}

#[test]
fn syntax_errors_are_located_too() {
    let (file, err) = load_error("model: {base: a/b\nprompt: cat\n");
    let text = err.to_string();
    assert!(text.starts_with(&format!("{file}:")), "{text}");
    assert!(matches!(err, PresetError::Parse { line, .. } if line >= 1));
}

#[test]
fn seed_flag_overrides_the_preset_seed() {
    let p = Preset::resolve(std::path::Path::new("anime")).unwrap();
    assert_eq!(p.sampler.seed, 1234);
    let q = p
        .clone()
        .with_overrides(&PresetOverrides { seed: Some(42) }, "anime")
        .unwrap();
    assert_eq!(q.sampler.seed, 42);
    // Everything else is untouched.
    let mut expected = p;
    expected.sampler.seed = 42;
    assert_eq!(q, expected);
}
