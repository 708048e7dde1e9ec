//! Pure pieces of guidance: classifier-free guidance and ControlNet step ranges.

use candle_core::{Result, Tensor};

/// Whether a ControlNet acting over the fraction `[start, end]` of the sampling steps is
/// active at step `i` of `n` (diffusers' `control_guidance_start/end`: the net is off when
/// `i/n < start` or `(i+1)/n > end`).
pub fn control_active(i: usize, n: usize, start: f64, end: f64) -> bool {
    let begin = i as f64 / n as f64;
    let finish = (i + 1) as f64 / n as f64;
    !(begin < start || finish > end)
}

/// Classifier-free guidance: `uncond + scale * (cond - uncond)`.
pub fn classifier_free_guidance(uncond: &Tensor, cond: &Tensor, scale: f64) -> Result<Tensor> {
    uncond + ((cond - uncond)? * scale)?
}

/// diffusers runs CFG (a doubled batch) only when the guidance scale exceeds 1.
pub fn uses_cfg(guidance_scale: f64) -> bool {
    guidance_scale > 1.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn step_ranges_follow_diffusers() {
        // start 0.25, end 0.75 over 4 steps: steps 1 and 2 only.
        let active: Vec<bool> = (0..4).map(|i| control_active(i, 4, 0.25, 0.75)).collect();
        assert_eq!(active, vec![false, true, true, false]);
        assert!((0..7).all(|i| control_active(i, 7, 0.0, 1.0)));
        // end 0.5 over 3 steps: (0+1)/3 <= 0.5 but 2/3 > 0.5.
        let active: Vec<bool> = (0..3).map(|i| control_active(i, 3, 0.0, 0.5)).collect();
        assert_eq!(active, vec![true, false, false]);
    }

    #[test]
    fn guidance_extrapolates_from_uncond() {
        let u = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let c = Tensor::new(&[3f32, 2.0], &Device::Cpu).unwrap();
        let g = classifier_free_guidance(&u, &c, 7.5).unwrap();
        assert_eq!(g.to_vec1::<f32>().unwrap(), vec![16.0, 2.0]);
        assert!(!uses_cfg(1.0) && uses_cfg(1.5));
    }
}
