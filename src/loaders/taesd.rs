//! The tiny VAE (TAESD, diffusers `AutoencoderTiny`) as users have it, for `model.vae`:
//!
//! * a diffusers folder or hub repo (`config.json` with `_class_name: AutoencoderTiny` +
//!   `diffusion_pytorch_model.safetensors`, e.g. `madebyollin/taesd`): read by the model stack
//!   like any root model, the class name choosing the network;
//! * madebyollin's original pair `taesd_encoder.safetensors` + `taesd_decoder.safetensors`
//!   (either file, or a folder holding both), whose keys are the indices of taesd.py's
//!   `nn.Sequential`s (`0.weight`, `1.conv.0.weight`, ...);
//! * a lone diffusers-layout weight file (`encoder.layers.*`, `decoder.layers.*`).
//!
//! The original keys map onto diffusers' as its `convert_tiny_autoencoder_to_diffusers.py`
//! maps them: encoder key `k` is `encoder.layers.k`; the decoder's layer 0 is taesd.py's
//! weightless `Clamp`, which diffusers folds into `DecoderTiny.forward`, so decoder key
//! `i.rest` is `decoder.layers.(i - 1).rest`. Files without a config get theirs inferred from
//! the weights' names and shapes (stage and block counts, channels).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::loaders::single_file::keys::Transform;
use crate::loaders::single_file::weights::WeightSource;
use crate::loaders::single_file::{SingleFileError, TensorFile, WeightMap};
use crate::models::autoencoder_tiny::AutoencoderTinyConfig;

/// File names of madebyollin's original SD1.x / SD2.x pair.
pub const ENCODER_FILE: &str = "taesd_encoder.safetensors";
pub const DECODER_FILE: &str = "taesd_decoder.safetensors";

/// Errors of reading a tiny VAE's files.
#[derive(Debug, thiserror::Error)]
pub enum TaesdError {
    #[error(transparent)]
    SingleFile(#[from] SingleFileError),
    #[error("{path} is the TAESD {half} and needs its {other} next to it ({expected}): {reason}")]
    MissingHalf {
        path: PathBuf,
        half: &'static str,
        other: &'static str,
        expected: PathBuf,
        reason: &'static str,
    },
    #[error("{path}: expected the TAESD {half} (original taesd.py keys), found other weights")]
    WrongHalf { path: PathBuf, half: &'static str },
    #[error("{label}: not a tiny VAE (AutoencoderTiny) the weights describe: {message}")]
    Infer { label: String, message: String },
}

/// Which half of the original pair a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaesdHalf {
    Encoder,
    Decoder,
}

impl TaesdHalf {
    fn name(self) -> &'static str {
        match self {
            Self::Encoder => "encoder",
            Self::Decoder => "decoder",
        }
    }

    fn other(self) -> Self {
        match self {
            Self::Encoder => Self::Decoder,
            Self::Decoder => Self::Encoder,
        }
    }
}

/// The leading `nn.Sequential` index of an original key (`"12.conv.0.weight"` → 12).
fn leading_index(key: &str) -> Option<usize> {
    key.split_once('.')?.0.parse().ok()
}

/// Which TAESD half `file` holds in taesd.py's layout, from its keys: every key starts with a
/// layer index; the encoder's first layer is a conv (`0.weight`), the decoder's is the
/// weightless `Clamp` (no `0.*`, and `1.weight` its first conv).
pub fn original_half(file: &TensorFile) -> Option<TaesdHalf> {
    let shapes = file.shapes();
    if shapes.is_empty() || !shapes.keys().all(|k| leading_index(k).is_some()) {
        return None;
    }
    if shapes.contains_key("0.weight") {
        Some(TaesdHalf::Encoder)
    } else if shapes.contains_key("1.weight") && !shapes.keys().any(|k| leading_index(k) == Some(0))
    {
        Some(TaesdHalf::Decoder)
    } else {
        None
    }
}

/// Whether `file` holds a whole AutoencoderTiny under diffusers' names.
pub fn is_diffusers_layout(file: &TensorFile) -> bool {
    let shapes = file.shapes();
    shapes.contains_key("encoder.layers.0.weight") && shapes.contains_key("decoder.layers.0.weight")
}

/// The original pair inside `dir`, if it holds both files.
pub fn original_pair_in(dir: &Path) -> Option<PathBuf> {
    let encoder = dir.join(ENCODER_FILE);
    (encoder.is_file() && dir.join(DECODER_FILE).is_file()).then_some(encoder)
}

/// The two files of an original pair (encoder, decoder) that `source` names: a folder holding
/// both, or either file (the other being its sibling, which need not exist). `None` when
/// `source` is neither (a diffusers folder or file, a hub id).
pub fn original_pair_files(source: &Path) -> Option<(PathBuf, PathBuf)> {
    if source.is_dir() {
        let encoder = original_pair_in(source)?;
        return Some((encoder, source.join(DECODER_FILE)));
    }
    let file = TensorFile::open(source).ok()?;
    let half = original_half(&file)?;
    let other = sibling(source, half)?;
    Some(match half {
        TaesdHalf::Encoder => (source.to_path_buf(), other),
        TaesdHalf::Decoder => (other, source.to_path_buf()),
    })
}

/// The other file of the pair: the same name with its last `encoder` / `decoder` swapped.
fn sibling(path: &Path, half: TaesdHalf) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let at = name.rfind(half.name())?;
    let other = format!(
        "{}{}{}",
        &name[..at],
        half.other().name(),
        &name[at + half.name().len()..]
    );
    Some(path.with_file_name(other))
}

/// Adds the tensors of one original half to `map` under diffusers' names.
fn add_original(
    map: &mut WeightMap,
    file: &Arc<TensorFile>,
    half: TaesdHalf,
) -> Result<(), TaesdError> {
    for key in file.shapes().keys() {
        let name = match half {
            TaesdHalf::Encoder => format!("encoder.layers.{key}"),
            TaesdHalf::Decoder => {
                let (index, rest) = key
                    .split_once('.')
                    .and_then(|(i, rest)| Some((i.parse::<usize>().ok()?, rest)))
                    .filter(|(i, _)| *i > 0)
                    .ok_or_else(|| TaesdError::WrongHalf {
                        path: file.path().to_path_buf(),
                        half: half.name(),
                    })?;
                format!("decoder.layers.{}.{rest}", index - 1)
            }
        };
        if let Some(source) = WeightSource::new(file, key, Transform::Identity) {
            map.insert(name, source);
        }
    }
    Ok(())
}

/// The weights (diffusers names) and inferred config of an original pair, given either file.
pub fn load_original_pair(path: &Path) -> Result<(AutoencoderTinyConfig, WeightMap), TaesdError> {
    let file = TensorFile::open(path)?;
    let half = original_half(&file).ok_or_else(|| TaesdError::WrongHalf {
        path: path.to_path_buf(),
        half: "encoder or decoder",
    })?;
    let missing = |expected: PathBuf, reason| TaesdError::MissingHalf {
        path: path.to_path_buf(),
        half: half.name(),
        other: half.other().name(),
        expected,
        reason,
    };
    let other_path = sibling(path, half).ok_or_else(|| {
        missing(
            path.with_file_name(match half {
                TaesdHalf::Encoder => DECODER_FILE,
                TaesdHalf::Decoder => ENCODER_FILE,
            }),
            "its name has no \"encoder\" / \"decoder\" to swap",
        )
    })?;
    if !other_path.is_file() {
        return Err(missing(other_path, "no such file"));
    }
    let other = TensorFile::open(&other_path)?;
    if original_half(&other) != Some(half.other()) {
        return Err(TaesdError::WrongHalf {
            path: other_path,
            half: half.other().name(),
        });
    }
    let (encoder, decoder) = match half {
        TaesdHalf::Encoder => (file, other),
        TaesdHalf::Decoder => (other, file),
    };
    let label = format!(
        "tiny VAE {} + {}",
        encoder.path().display(),
        decoder.path().display()
    );
    let mut map = WeightMap::new(label);
    add_original(&mut map, &encoder, TaesdHalf::Encoder)?;
    add_original(&mut map, &decoder, TaesdHalf::Decoder)?;
    let config = infer_config(&map)?;
    Ok((config, map))
}

/// The weights and inferred config of a lone diffusers-layout AutoencoderTiny file.
pub fn load_diffusers_file(
    file: &Arc<TensorFile>,
) -> Result<(AutoencoderTinyConfig, WeightMap), TaesdError> {
    let map = WeightMap::identity(format!("tiny VAE {}", file.path().display()), file);
    let config = infer_config(&map)?;
    Ok((config, map))
}

/// One entry of a tiny encoder's or decoder's `layers`, as the weights show it.
#[derive(Debug, Clone, PartialEq)]
enum Entry {
    /// A conv and its `[out, in, k, k]` weight shape.
    Conv(Vec<usize>),
    /// An `AutoencoderTinyBlock`.
    Block,
    /// No weights: an activation or `nn.Upsample`.
    Empty,
}

fn entries(map: &WeightMap, prefix: &str) -> Vec<Entry> {
    let last = map
        .names()
        .filter_map(|n| leading_index(n.strip_prefix(prefix)?))
        .max();
    let Some(last) = last else {
        return Vec::new();
    };
    (0..=last)
        .map(|i| {
            if map.contains(&format!("{prefix}{i}.conv.0.weight")) {
                Entry::Block
            } else if let Some(shape) = map.shape(&format!("{prefix}{i}.weight")) {
                Entry::Conv(shape.to_vec())
            } else {
                Entry::Empty
            }
        })
        .collect()
}

fn conv_shape(entry: Option<&Entry>) -> Option<&[usize]> {
    match entry {
        Some(Entry::Conv(shape)) if shape.len() == 4 => Some(shape),
        _ => None,
    }
}

/// The config diffusers' `AutoencoderTiny` would need for these (diffusers-named) weights.
/// `act_fn` cannot be seen in weights and is TAESD's ReLU.
pub fn infer_config(map: &WeightMap) -> Result<AutoencoderTinyConfig, TaesdError> {
    let fail = |message: String| TaesdError::Infer {
        label: map.label().to_string(),
        message,
    };
    // Encoder: conv_in, blocks, then (stride-2 conv, blocks)*, conv_out.
    let enc = entries(map, "encoder.layers.");
    let enc_in = conv_shape(enc.first()).ok_or_else(|| fail("no encoder.layers.0 conv".into()))?;
    let enc_out = conv_shape(enc.last())
        .filter(|_| enc.len() > 1)
        .ok_or_else(|| fail("the encoder does not end with a conv".into()))?;
    let mut num_encoder_blocks = vec![0];
    for (i, entry) in enc.iter().enumerate().take(enc.len() - 1).skip(1) {
        match entry {
            Entry::Block => *num_encoder_blocks.last_mut().unwrap_or(&mut 0) += 1,
            Entry::Conv(_) => num_encoder_blocks.push(0),
            Entry::Empty => return Err(fail(format!("encoder.layers.{i} holds no weights"))),
        }
    }
    // Decoder: conv_in, act, then per stage blocks, [upsample], conv.
    let dec = entries(map, "decoder.layers.");
    let dec_in = conv_shape(dec.first()).ok_or_else(|| fail("no decoder.layers.0 conv".into()))?;
    let dec_out = conv_shape(dec.last())
        .filter(|_| dec.len() > 2)
        .ok_or_else(|| fail("the decoder does not end with a conv".into()))?;
    let mut num_decoder_blocks = Vec::new();
    let mut blocks = 0;
    for entry in dec.iter().skip(2) {
        match entry {
            Entry::Block => blocks += 1,
            Entry::Conv(_) => {
                num_decoder_blocks.push(blocks);
                blocks = 0;
            }
            Entry::Empty => {}
        }
    }
    let encoder_channels = enc_in[0];
    let decoder_channels = dec_in[0];
    let config = AutoencoderTinyConfig {
        in_channels: enc_in[1],
        out_channels: dec_out[0],
        encoder_block_out_channels: vec![encoder_channels; num_encoder_blocks.len()],
        decoder_block_out_channels: vec![decoder_channels; num_decoder_blocks.len()],
        latent_channels: enc_out[0],
        num_encoder_blocks,
        num_decoder_blocks,
        ..AutoencoderTinyConfig::taesd()
    };
    if dec_in[1] != config.latent_channels {
        return Err(fail(format!(
            "the encoder makes {} latent channels, the decoder takes {}",
            config.latent_channels, dec_in[1]
        )));
    }
    config.validate().map_err(fail)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_swaps_the_last_half_name() {
        let enc = Path::new("/m/taesd_encoder.safetensors");
        assert_eq!(
            sibling(enc, TaesdHalf::Encoder).unwrap(),
            Path::new("/m/taesd_decoder.safetensors")
        );
        let dec = Path::new("/m/encoders/my_taesd_decoder.safetensors");
        assert_eq!(
            sibling(dec, TaesdHalf::Decoder).unwrap(),
            Path::new("/m/encoders/my_taesd_encoder.safetensors")
        );
        assert!(sibling(Path::new("/m/tiny.safetensors"), TaesdHalf::Encoder).is_none());
    }

    #[test]
    fn leading_index_reads_the_sequential_position() {
        assert_eq!(leading_index("12.conv.0.weight"), Some(12));
        assert_eq!(leading_index("0.weight"), Some(0));
        assert_eq!(leading_index("encoder.layers.0.weight"), None);
    }
}
