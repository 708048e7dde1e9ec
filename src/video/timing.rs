//! Mapping presentation timestamps onto a constant-frame-rate grid.
//!
//! The semantics follow FFmpeg's `fps` filter (what `ffmpeg -vsync cfr` does): a decoded
//! frame at time `t` (relative to the first frame) belongs to output slot
//! `round(t * fps)` (halves away from zero); output slot `n` shows the last frame whose slot
//! is `<= n`, so frames are duplicated across gaps and dropped when several land on one
//! slot. The clip spans `round(duration * fps)` slots, where the duration runs from the
//! first frame's start to the last frame's end. All arithmetic is exact (i128).

use std::ops::Range;

use crate::preset::rational::Rational;

/// Seconds per timestamp tick, as a container stores it (e.g. 1/12288, 1/1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeBase {
    pub num: i64,
    pub den: i64,
}

impl TimeBase {
    pub fn new(num: i64, den: i64) -> Option<Self> {
        (num > 0 && den > 0).then_some(Self { num, den })
    }

    pub fn to_secs(self, ticks: i64) -> f64 {
        ticks as f64 * self.num as f64 / self.den as f64
    }

    /// The tick nearest to `secs`.
    pub fn from_secs(self, secs: f64) -> i64 {
        (secs * self.den as f64 / self.num as f64).round() as i64
    }
}

/// `a * b / c` rounded to nearest, halves away from zero (FFmpeg's AV_ROUND_NEAR_INF).
pub fn mul_div_round(a: i128, b: i128, c: i128) -> i128 {
    debug_assert!(c > 0);
    let p = a * b;
    if p >= 0 {
        (p + c / 2) / c
    } else {
        -((-p + c / 2) / c)
    }
}

/// Output slot of a frame at `pts` when the grid starts at `start` (both in `time_base`).
pub fn slot_of(pts: i64, start: i64, time_base: TimeBase, fps: Rational) -> i64 {
    let ticks = pts as i128 - start as i128;
    let num = time_base.num as i128 * fps.num as i128;
    let den = time_base.den as i128 * fps.den as i128;
    clamp_i64(mul_div_round(ticks, num, den))
}

/// Number of output frames for a stream whose frames cover `[start, end)` ticks.
pub fn cfr_frame_count(start: i64, end: i64, time_base: TimeBase, fps: Rational) -> u64 {
    slot_of(end, start, time_base, fps).max(0) as u64
}

/// Timestamp (in `time_base`, relative to the grid start) where slot `slot` begins.
pub fn slot_start_ticks(slot: u64, time_base: TimeBase, fps: Rational) -> i64 {
    let num = fps.den as i128 * time_base.den as i128;
    let den = fps.num as i128 * time_base.num as i128;
    clamp_i64(mul_div_round(slot as i128, num, den))
}

fn clamp_i64(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Streaming CFR selection over the output slots `range`.
///
/// Feed it the slot of every decoded frame in presentation order; it answers how many
/// output frames the previously held frame must fill before the new one takes its place.
/// Only one decoded frame is ever held, so memory does not depend on the clip length.
#[derive(Clone, Debug)]
pub struct CfrGrid {
    next: u64,
    end: u64,
    holding: bool,
}

impl CfrGrid {
    pub fn new(range: Range<u64>) -> Self {
        Self {
            next: range.start,
            end: range.end.max(range.start),
            holding: false,
        }
    }

    /// A decoded frame at `slot` arrives. Returns the number of copies of the previously
    /// held frame to emit now (slots `next..next+copies`); afterwards the new frame is the
    /// held one. The first frame is held whatever its slot, so a clip whose first picture
    /// comes a little late still fills slot 0 (as FFmpeg's fps filter does).
    pub fn push(&mut self, slot: i64) -> u64 {
        if !self.holding {
            self.holding = true;
            return 0;
        }
        if slot <= self.next as i64 {
            return 0;
        }
        let copies = (slot as u64).min(self.end) - self.next;
        self.next += copies;
        copies
    }

    /// End of stream: copies of the held frame that fill the remaining slots.
    pub fn finish(&mut self) -> u64 {
        if !self.holding {
            return 0;
        }
        let copies = self.end - self.next;
        self.next = self.end;
        copies
    }

    /// Whether any frame has been pushed.
    pub fn is_holding(&self) -> bool {
        self.holding
    }

    /// First slot not yet emitted.
    pub fn next_slot(&self) -> u64 {
        self.next
    }

    /// All slots in the range have been emitted; later frames are not needed.
    pub fn is_complete(&self) -> bool {
        self.next >= self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fps(n: u32, d: u32) -> Rational {
        Rational::new(n, d).unwrap()
    }

    /// Runs the grid over whole-stream input and returns the source frame shown in each slot.
    fn select(slots: &[i64], range: Range<u64>) -> Vec<usize> {
        let mut grid = CfrGrid::new(range);
        let mut out = Vec::new();
        let mut held = None;
        for (i, &s) in slots.iter().enumerate() {
            let copies = grid.push(s);
            if let Some(h) = held {
                out.extend(std::iter::repeat_n(h, copies as usize));
            }
            held = Some(i);
            if grid.is_complete() {
                break;
            }
        }
        let copies = grid.finish();
        if let Some(h) = held {
            out.extend(std::iter::repeat_n(h, copies as usize));
        }
        out
    }

    #[test]
    fn rounding_is_half_away_from_zero() {
        assert_eq!(mul_div_round(5, 1, 2), 3);
        assert_eq!(mul_div_round(-5, 1, 2), -3);
        assert_eq!(mul_div_round(4, 1, 3), 1);
        assert_eq!(mul_div_round(5, 1, 3), 2);
    }

    #[test]
    fn slots_on_mp4_time_base() {
        // 24 fps stored at 1/12288: frame k at k*512 ticks.
        let tb = TimeBase::new(1, 12288).unwrap();
        let f = fps(24, 1);
        for k in 0..100 {
            assert_eq!(slot_of(k * 512, 0, tb, f), k);
        }
        assert_eq!(cfr_frame_count(0, 72 * 512, tb, f), 72);
        assert_eq!(slot_start_ticks(72, tb, f), 72 * 512);
        // Grid relative to a non-zero start.
        assert_eq!(slot_of(1000 + 3 * 512, 1000, tb, f), 3);
    }

    #[test]
    fn ntsc_rates_are_exact() {
        let tb = TimeBase::new(1, 90000).unwrap();
        let f = fps(30000, 1001);
        // 30000 frames of 3003 ticks each.
        assert_eq!(cfr_frame_count(0, 30000 * 3003, tb, f), 30000);
        assert_eq!(slot_of(29999 * 3003, 0, tb, f), 29999);
    }

    #[test]
    fn identity_when_input_is_on_grid() {
        let slots: Vec<i64> = (0..10).collect();
        assert_eq!(select(&slots, 0..10), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn gaps_duplicate_the_previous_frame() {
        // Frames at slots 0, 1, 4, 5 (VFR with a pause), clip ends at slot 8.
        assert_eq!(select(&[0, 1, 4, 5], 0..8), vec![0, 1, 1, 1, 2, 3, 3, 3]);
    }

    #[test]
    fn crowded_slots_keep_the_last_frame() {
        // 60 -> 24 style: several frames per slot, the latest one wins.
        assert_eq!(select(&[0, 0, 1, 1, 1, 2, 3, 3], 0..4), vec![1, 4, 5, 7]);
    }

    #[test]
    fn late_first_frame_backfills_slot_zero() {
        assert_eq!(select(&[2, 3], 0..4), vec![0, 0, 0, 1]);
    }

    #[test]
    fn subrange_skips_earlier_frames_and_stops_early() {
        let slots: Vec<i64> = (0..100).collect();
        assert_eq!(select(&slots, 10..13), vec![10, 11, 12]);
        // Decoding from a keyframe before the range: earlier frames are superseded.
        let mut grid = CfrGrid::new(10..13);
        assert_eq!(grid.push(7), 0);
        assert_eq!(grid.push(10), 0);
        assert_eq!(grid.push(11), 1);
        assert_eq!(grid.next_slot(), 11);
        assert_eq!(grid.push(12), 1);
        assert_eq!(grid.push(13), 1);
        assert!(grid.is_complete());
        assert_eq!(grid.finish(), 0);
    }

    #[test]
    fn empty_stream_emits_nothing() {
        let mut grid = CfrGrid::new(0..5);
        assert!(!grid.is_holding());
        assert_eq!(grid.finish(), 0);
    }

    #[test]
    fn output_count_matches_grid_for_vfr_input() {
        // Irregular timestamps (ms) over 1 s at a 24 fps grid: 24 output frames whatever
        // the input spacing.
        let tb = TimeBase::new(1, 1000).unwrap();
        let f = fps(24, 1);
        let pts = [0i64, 10, 50, 51, 200, 420, 430, 700, 990];
        let slots: Vec<i64> = pts.iter().map(|&p| slot_of(p, 0, tb, f)).collect();
        let n = cfr_frame_count(0, 1000, tb, f);
        assert_eq!(n, 24);
        let shown = select(&slots, 0..n);
        assert_eq!(shown.len(), 24);
        // 420 ms and 430 ms both land on slot 10, the later one wins and is shown until the
        // 700 ms frame (slot 17) takes over.
        assert_eq!(shown[12], 6);
        assert_eq!(shown[23], 7);
    }
}
