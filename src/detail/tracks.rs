//! Region tracks: the same face or hand keeps one id from frame to frame, its box is
//! smoothed over time so that crops do not jump, and its seed is derived from the id so the
//! detail pass draws it with the same noise in every frame.
//!
//! Matching is greedy by normalised centre distance between boxes of the same kind (a left
//! hand only continues a left-hand track). Each track smooths its box centre and side with
//! the One-Euro filter of the pose module, with speeds measured in box sides per second so
//! that one setting fits a face filling the frame and a hand far away. A track that finds
//! no match is kept for [`MAX_MISSED_FRAMES`] frames (a hand occluded for a moment comes
//! back with its id and seed), then dropped.

use super::regions::SquareBox;
use crate::preprocess::pose::smoothing::OneEuroFilter;
use crate::preset::detail::BoxSmoothing;
use crate::preset::detail::RegionKind;
use crate::preset::pose::OneEuroParams;

/// Frames a track survives without a match.
pub const MAX_MISSED_FRAMES: u32 = 8;

/// A box continues a track when their centres are closer than this many box sides (the
/// larger of the two): fast hands move well under one side per frame at video rates.
pub const MAX_MATCH_DISTANCE: f32 = 0.75;

impl From<BoxSmoothing> for OneEuroParams {
    fn from(s: BoxSmoothing) -> Self {
        OneEuroParams {
            min_cutoff: s.min_cutoff,
            beta: s.beta,
            d_cutoff: s.d_cutoff,
        }
    }
}

/// The seed a track is detailed with: `base + splitmix64(id)` (wrapping). The same in every
/// frame of the track; different tracks get unrelated seeds.
pub fn track_seed(base_seed: u64, track_id: u64) -> u64 {
    base_seed.wrapping_add(splitmix64(track_id))
}

/// SplitMix64's output function: a fixed, well-mixing 64-bit hash (stable across runs and
/// platforms, unlike `std`'s hasher).
fn splitmix64(v: u64) -> u64 {
    let mut z = v.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Distance between box centres in units of the larger side.
pub fn match_distance(a: &SquareBox, b: &SquareBox) -> f32 {
    let d = ((a.cx - b.cx).powi(2) + (a.cy - b.cy).powi(2)).sqrt();
    d / a.side.max(b.side).max(f32::EPSILON)
}

/// Greedy assignment: pairs `(track, candidate)` of the same kind closer than
/// [`MAX_MATCH_DISTANCE`], closest first, each track and candidate used at most once.
pub fn assign(
    tracks: &[(RegionKind, SquareBox)],
    candidates: &[(RegionKind, SquareBox)],
) -> Vec<(usize, usize)> {
    let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
    for (t, (tkind, tbox)) in tracks.iter().enumerate() {
        for (c, (ckind, cbox)) in candidates.iter().enumerate() {
            if tkind != ckind {
                continue;
            }
            let d = match_distance(tbox, cbox);
            if d < MAX_MATCH_DISTANCE {
                pairs.push((d, t, c));
            }
        }
    }
    // Ties broken by index so the result never depends on sort stability.
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut track_used = vec![false; tracks.len()];
    let mut candidate_used = vec![false; candidates.len()];
    let mut out = Vec::new();
    for (_, t, c) in pairs {
        if !track_used[t] && !candidate_used[c] {
            track_used[t] = true;
            candidate_used[c] = true;
            out.push((t, c));
        }
    }
    out
}

/// One-Euro filters over a box's centre and side.
#[derive(Debug, Clone)]
struct BoxSmoother {
    cx: OneEuroFilter,
    cy: OneEuroFilter,
    side: OneEuroFilter,
}

impl BoxSmoother {
    fn new(params: OneEuroParams, frequency: f64) -> Self {
        BoxSmoother {
            cx: OneEuroFilter::new(params, frequency),
            cy: OneEuroFilter::new(params, frequency),
            side: OneEuroFilter::new(params, frequency),
        }
    }

    fn smooth(&mut self, time: f64, raw: &SquareBox) -> SquareBox {
        // Speeds in sides per second.
        let scale = 1.0 / (raw.side as f64).max(1e-6);
        SquareBox {
            cx: self.cx.filter(time, raw.cx as f64, scale) as f32,
            cy: self.cy.filter(time, raw.cy as f64, scale) as f32,
            side: self.side.filter(time, raw.side as f64, scale) as f32,
        }
    }
}

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    kind: RegionKind,
    /// The last matched box, unsmoothed (matching against the lagging smoothed box would
    /// lose fast parts).
    last_raw: SquareBox,
    smoother: BoxSmoother,
    missed: u32,
}

/// A candidate of this frame with its track.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackedBox {
    pub track_id: u64,
    pub kind: RegionKind,
    /// Index of the candidate in the slice given to [`RegionTracker::update`].
    pub candidate: usize,
    /// The smoothed box.
    pub square: SquareBox,
}

/// Tracks of all regions of a clip. Feed it every frame in order.
#[derive(Debug, Clone)]
pub struct RegionTracker {
    params: OneEuroParams,
    frequency: f64,
    tracks: Vec<Track>,
    next_id: u64,
}

impl RegionTracker {
    /// `frequency` is the frame rate (Hz), used until timestamps give it.
    pub fn new(smoothing: BoxSmoothing, frequency: f64) -> Self {
        RegionTracker {
            params: smoothing.into(),
            frequency,
            tracks: Vec::new(),
            next_id: 0,
        }
    }

    /// Forgets every track; ids start again at 0.
    pub fn reset(&mut self) {
        self.tracks.clear();
        self.next_id = 0;
    }

    pub fn live_tracks(&self) -> usize {
        self.tracks.len()
    }

    /// Matches this frame's boxes (at `time` seconds) to the tracks, starts tracks for new
    /// ones, ages the rest. Returns one entry per candidate, in candidate order.
    pub fn update(&mut self, time: f64, candidates: &[(RegionKind, SquareBox)]) -> Vec<TrackedBox> {
        let previous: Vec<(RegionKind, SquareBox)> =
            self.tracks.iter().map(|t| (t.kind, t.last_raw)).collect();
        let pairs = assign(&previous, candidates);
        let mut track_of = vec![None; candidates.len()];
        let mut matched = vec![false; self.tracks.len()];
        for (t, c) in pairs {
            track_of[c] = Some(t);
            matched[t] = true;
        }
        for (track, matched) in self.tracks.iter_mut().zip(&matched) {
            if !matched {
                track.missed += 1;
            }
        }
        let mut out = Vec::with_capacity(candidates.len());
        for (c, (kind, raw)) in candidates.iter().enumerate() {
            let t = match track_of[c] {
                Some(t) => t,
                None => {
                    self.tracks.push(Track {
                        id: self.next_id,
                        kind: *kind,
                        last_raw: *raw,
                        smoother: BoxSmoother::new(self.params, self.frequency),
                        missed: 0,
                    });
                    self.next_id += 1;
                    self.tracks.len() - 1
                }
            };
            let track = &mut self.tracks[t];
            track.last_raw = *raw;
            track.missed = 0;
            out.push(TrackedBox {
                track_id: track.id,
                kind: *kind,
                candidate: c,
                square: track.smoother.smooth(time, raw),
            });
        }
        self.tracks.retain(|t| t.missed <= MAX_MISSED_FRAMES);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FPS: f64 = 30.0;

    fn sq(cx: f32, cy: f32, side: f32) -> SquareBox {
        SquareBox { cx, cy, side }
    }

    #[test]
    fn seeds_are_stable_per_track_and_differ_between_tracks() {
        assert_eq!(track_seed(42, 0), track_seed(42, 0));
        assert_ne!(track_seed(42, 0), track_seed(42, 1));
        assert_ne!(track_seed(42, 0), track_seed(43, 0));
        // Fixed values: a seed must not change between builds.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(track_seed(u64::MAX, 0), 0xE220_A839_7B1D_CDAE);
    }

    #[test]
    fn assignment_is_greedy_by_distance_and_respects_kind() {
        let tracks = [
            (RegionKind::LeftHand, sq(0.0, 0.0, 10.0)),
            (RegionKind::RightHand, sq(20.0, 0.0, 10.0)),
        ];
        // The right hand moved next to where the left hand was: kinds keep them apart.
        let candidates = [
            (RegionKind::RightHand, sq(2.0, 0.0, 10.0)),
            (RegionKind::LeftHand, sq(1.0, 0.0, 10.0)),
        ];
        assert_eq!(assign(&tracks, &candidates), vec![(0, 1)]);
        // Two faces: each goes to the nearer track.
        let tracks = [
            (RegionKind::Face, sq(0.0, 0.0, 10.0)),
            (RegionKind::Face, sq(5.0, 0.0, 10.0)),
        ];
        let candidates = [
            (RegionKind::Face, sq(6.0, 0.0, 10.0)),
            (RegionKind::Face, sq(-1.0, 0.0, 10.0)),
        ];
        let mut got = assign(&tracks, &candidates);
        got.sort();
        assert_eq!(got, vec![(0, 1), (1, 0)]);
        // Too far: no match.
        assert!(assign(&tracks[..1], &[(RegionKind::Face, sq(8.0, 0.0, 10.0))]).is_empty());
    }

    #[test]
    fn ids_stay_with_moving_parts_and_new_parts_get_new_ids() {
        let mut tracker = RegionTracker::new(BoxSmoothing::default(), FPS);
        let mut ids = Vec::new();
        for i in 0..10 {
            let t = i as f64 / FPS;
            let x = 50.0 + 3.0 * i as f32;
            let mut candidates = vec![
                (RegionKind::Face, sq(x, 40.0, 30.0)),
                (RegionKind::LeftHand, sq(100.0 - x, 80.0, 20.0)),
            ];
            if i >= 5 {
                candidates.push((RegionKind::Face, sq(300.0, 40.0, 30.0)));
            }
            let out = tracker.update(t, &candidates);
            assert_eq!(out.len(), candidates.len());
            ids.push(out.iter().map(|b| b.track_id).collect::<Vec<_>>());
        }
        for frame in &ids[..5] {
            assert_eq!(frame, &vec![0, 1]);
        }
        for frame in &ids[5..] {
            assert_eq!(frame, &vec![0, 1, 2]);
        }
    }

    #[test]
    fn a_briefly_lost_part_keeps_its_id_and_a_long_lost_one_does_not() {
        let mut tracker = RegionTracker::new(BoxSmoothing::default(), FPS);
        let hand = [(RegionKind::RightHand, sq(10.0, 10.0, 8.0))];
        assert_eq!(tracker.update(0.0, &hand)[0].track_id, 0);
        let mut frame = 1;
        for _ in 0..MAX_MISSED_FRAMES {
            tracker.update(frame as f64 / FPS, &[]);
            frame += 1;
        }
        assert_eq!(tracker.update(frame as f64 / FPS, &hand)[0].track_id, 0);
        frame += 1;
        for _ in 0..=MAX_MISSED_FRAMES {
            tracker.update(frame as f64 / FPS, &[]);
            frame += 1;
        }
        assert_eq!(tracker.live_tracks(), 0);
        assert_eq!(tracker.update(frame as f64 / FPS, &hand)[0].track_id, 1);
        tracker.reset();
        assert_eq!(tracker.update(0.0, &hand)[0].track_id, 0);
    }

    /// Deterministic pseudo-random jitter in [-1, 1].
    fn jitter(i: u64) -> f32 {
        (splitmix64(i) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    #[test]
    fn smoothing_calms_a_trembling_box() {
        let mut tracker = RegionTracker::new(BoxSmoothing::default(), FPS);
        let (mut raw_steps, mut smooth_steps) = (0.0f32, 0.0f32);
        let (mut last_raw, mut last_smooth) = (None, None);
        for i in 0..90u64 {
            // A still face whose keypoints tremble by up to 3 % of its size each frame.
            let raw = sq(
                100.0 + 1.5 * jitter(3 * i),
                60.0 + 1.5 * jitter(3 * i + 1),
                50.0 + 1.5 * jitter(3 * i + 2),
            );
            let out = tracker.update(i as f64 / FPS, &[(RegionKind::Face, raw)]);
            let smooth = out[0].square;
            if i >= 30 {
                if let (Some(r), Some(s)) = (last_raw, last_smooth) {
                    let r: SquareBox = r;
                    let s: SquareBox = s;
                    raw_steps +=
                        (raw.cx - r.cx).abs() + (raw.cy - r.cy).abs() + (raw.side - r.side).abs();
                    smooth_steps += (smooth.cx - s.cx).abs()
                        + (smooth.cy - s.cy).abs()
                        + (smooth.side - s.side).abs();
                }
            }
            last_raw = Some(raw);
            last_smooth = Some(smooth);
            assert!((smooth.cx - 100.0).abs() <= 1.5 && (smooth.side - 50.0).abs() <= 1.5);
        }
        // Frame-to-frame movement of the crop is a small fraction of the raw box's.
        assert!(
            smooth_steps < 0.25 * raw_steps,
            "{smooth_steps} vs {raw_steps}"
        );
    }

    #[test]
    fn smoothing_follows_fast_motion_with_little_lag() {
        let mut tracker = RegionTracker::new(BoxSmoothing::default(), FPS);
        let side = 40.0;
        let mut lag = 0.0;
        for i in 0..60 {
            // Two box sides per second.
            let x = 100.0 + 2.0 * side * i as f32 / FPS as f32;
            let out = tracker.update(i as f64 / FPS, &[(RegionKind::LeftHand, sq(x, 50.0, side))]);
            lag = x - out[0].square.cx;
            assert_eq!(out[0].track_id, 0);
        }
        // Steady state: the crop trails by well under a tenth of its size.
        assert!(lag > 0.0 && lag < 0.1 * side, "lag {lag}");
    }
}
