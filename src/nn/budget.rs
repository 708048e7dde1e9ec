//! The memory bound of attention, shared by the fused CPU kernel and the portable path.

/// Upper bound on the number of f32 attention scores materialised at once (over all threads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionBudget {
    pub max_scores: usize,
}

impl Default for AttentionBudget {
    /// 16 Mi scores = 64 MiB per score block (the softmax output doubles it), independent of
    /// the image size and of how many extra frames' keys a hook appends.
    fn default() -> Self {
        Self {
            max_scores: 1 << 24,
        }
    }
}
