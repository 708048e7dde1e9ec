//! What tells the Stable Diffusion generations apart, in one place: the loaders fill in from
//! here what a checkpoint's tensor shapes cannot say. SDXL would be a new variant (with its
//! second text encoder and added conditioning), not a flag on these two.

/// Which Stable Diffusion generation a model belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// SD1.x: OpenAI CLIP ViT-L/14, 768-wide cross-attention, 8 heads per block.
    Sd1,
    /// SD2.x: OpenCLIP ViT-H/14, 1024-wide cross-attention, 64-channel heads.
    Sd2,
}

/// The text encoder a family conditions on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoder {
    /// OpenAI CLIP ViT-L/14 (quick-gelu MLPs), last layer.
    ClipVitL14,
    /// OpenCLIP ViT-H/14 (erf gelu MLPs), penultimate layer.
    OpenClipVitH14,
}

/// How the UNet's attention heads are sized (diffusers' `attention_head_dim`, which for these
/// models holds head counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionHeads {
    /// The same number of heads in every block (their width grows with the channels).
    Count(usize),
    /// Heads of a fixed width (the count grows with the channels).
    Width(usize),
}

impl AttentionHeads {
    /// Heads of a block with `channels` channels.
    pub fn heads_for(self, channels: usize) -> usize {
        match self {
            AttentionHeads::Count(n) => n,
            AttentionHeads::Width(w) => channels / w,
        }
    }
}

impl Family {
    /// From the UNet's (or ControlNet's) cross-attention width.
    pub fn from_cross_attention_dim(dim: usize) -> Option<Self> {
        [Family::Sd1, Family::Sd2]
            .into_iter()
            .find(|f| f.cross_attention_dim() == dim)
    }

    /// Width of the text embeddings the UNet attends to.
    pub fn cross_attention_dim(self) -> usize {
        match self {
            Family::Sd1 => 768,
            Family::Sd2 => 1024,
        }
    }

    pub fn text_encoder(self) -> TextEncoder {
        match self {
            Family::Sd1 => TextEncoder::ClipVitL14,
            Family::Sd2 => TextEncoder::OpenClipVitH14,
        }
    }

    pub fn attention_heads(self) -> AttentionHeads {
        match self {
            Family::Sd1 => AttentionHeads::Count(8),
            Family::Sd2 => AttentionHeads::Width(64),
        }
    }

    /// Whether the spatial transformers project with linear layers (SD2.x) rather than 1×1
    /// convs (SD1.x).
    pub fn use_linear_projection(self) -> bool {
        self == Family::Sd2
    }

    /// Latent side of the stock configs (×8 pixels: 512 and 768).
    pub fn default_sample_size(self) -> usize {
        match self {
            Family::Sd1 => 64,
            Family::Sd2 => 96,
        }
    }

    /// diffusers' `prediction_type` for a model of this family trained at `sample_size`
    /// latents: SD2.x's 768 models (96² latents) predict v, every other model the noise.
    pub fn default_prediction_type(self, sample_size: usize) -> &'static str {
        match self {
            Family::Sd2 if sample_size == Family::Sd2.default_sample_size() => "v_prediction",
            _ => "epsilon",
        }
    }

    /// Hub repo whose tokenizer the family uses (single files do not carry one).
    pub fn tokenizer_repo(self) -> &'static str {
        match self {
            Family::Sd1 => "stable-diffusion-v1-5/stable-diffusion-v1-5",
            Family::Sd2 => "stabilityai/stable-diffusion-2-1",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_generations_differ_where_diffusers_configs_do() {
        for family in [Family::Sd1, Family::Sd2] {
            assert_eq!(
                Family::from_cross_attention_dim(family.cross_attention_dim()),
                Some(family)
            );
        }
        assert_eq!(Family::from_cross_attention_dim(320), None);
        assert_eq!(Family::Sd1.text_encoder(), TextEncoder::ClipVitL14);
        assert_eq!(Family::Sd2.text_encoder(), TextEncoder::OpenClipVitH14);
        // SD1.5: 8 heads of 40..160 channels; SD2.1: [5, 10, 20, 20] heads of 64.
        let sd1: Vec<_> = [320, 640, 1280, 1280]
            .map(|c| Family::Sd1.attention_heads().heads_for(c))
            .into();
        let sd2: Vec<_> = [320, 640, 1280, 1280]
            .map(|c| Family::Sd2.attention_heads().heads_for(c))
            .into();
        assert_eq!(sd1, [8, 8, 8, 8]);
        assert_eq!(sd2, [5, 10, 20, 20]);
        assert!(!Family::Sd1.use_linear_projection() && Family::Sd2.use_linear_projection());
        assert_eq!(
            (
                Family::Sd1.default_sample_size(),
                Family::Sd2.default_sample_size()
            ),
            (64, 96)
        );
        assert_eq!(Family::Sd1.default_prediction_type(64), "epsilon");
        assert_eq!(Family::Sd2.default_prediction_type(64), "epsilon");
        assert_eq!(Family::Sd2.default_prediction_type(96), "v_prediction");
    }
}
