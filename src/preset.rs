//! Presets (YAML).
