//! Backward warping: `out(x) = src(x + flow(x))`, with a mask of samples that fell inside.

use super::{field::FlowField, plane::Plane};
use rayon::prelude::*;

/// Warp a plane backwards by `flow` (sampled where each pixel's flow points).
pub fn warp_plane(src: &Plane, flow: &FlowField) -> Plane {
    let w = flow.width();
    let mut out = Plane::new(w, flow.height());
    out.data.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        for (x, v) in row.iter_mut().enumerate() {
            let (u, vv) = flow.at(x, y);
            *v = src.sample(x as f32 + u, y as f32 + vv);
        }
    });
    out
}

/// Warp a tight RGB24 image backwards by `flow` (same size). Returns the warped image as f32
/// RGB in [0, 255] and a per-pixel mask, `true` where the source position was inside.
pub fn warp_rgb(rgb: &[u8], flow: &FlowField) -> (Vec<f32>, Vec<bool>) {
    let (w, h) = (flow.width(), flow.height());
    assert_eq!(
        rgb.len(),
        w * h * 3,
        "warp_rgb: image and flow sizes differ"
    );
    let mut out = vec![0.0f32; w * h * 3];
    let mut inside = vec![false; w * h];
    out.par_chunks_mut(w * 3)
        .zip(inside.par_chunks_mut(w))
        .enumerate()
        .for_each(|(y, (row, mask))| {
            for x in 0..w {
                let (u, v) = flow.at(x, y);
                let sx = x as f32 + u;
                let sy = y as f32 + v;
                mask[x] = sx >= 0.0 && sy >= 0.0 && sx <= (w - 1) as f32 && sy <= (h - 1) as f32;
                let sx = sx.clamp(0.0, (w - 1) as f32);
                let sy = sy.clamp(0.0, (h - 1) as f32);
                let x0 = sx.floor() as usize;
                let y0 = sy.floor() as usize;
                let x1 = (x0 + 1).min(w - 1);
                let y1 = (y0 + 1).min(h - 1);
                let fx = sx - x0 as f32;
                let fy = sy - y0 as f32;
                for c in 0..3 {
                    let p = |xx: usize, yy: usize| rgb[(yy * w + xx) * 3 + c] as f32;
                    let top = p(x0, y0) * (1.0 - fx) + p(x1, y0) * fx;
                    let bottom = p(x0, y1) * (1.0 - fx) + p(x1, y1) * fx;
                    row[x * 3 + c] = top * (1.0 - fy) + bottom * fy;
                }
            }
        });
    (out, inside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_shift_moves_pixels_exactly() {
        let (w, h) = (6, 4);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let mut flow = FlowField::zeros(w, h);
        flow.u.data.iter_mut().for_each(|d| *d = 2.0);
        let (out, inside) = warp_rgb(&rgb, &flow);
        for y in 0..h {
            for x in 0..w {
                assert_eq!(inside[y * w + x], x + 2 < w);
                if x + 2 < w {
                    for c in 0..3 {
                        assert_eq!(
                            out[(y * w + x) * 3 + c],
                            rgb[(y * w + x + 2) * 3 + c] as f32
                        );
                    }
                }
            }
        }
    }
}
