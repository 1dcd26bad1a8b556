//! Watermark frontier and end-of-input tracking over a subtask's input channels.

/// Tracks the input channels of one subtask.
///
/// A subtask's watermark is the minimum over its channels' watermarks; a
/// channel that ended no longer holds the frontier back. The frontier only
/// moves forward, and it is reported only when it moves.
///
/// ```
/// use sluice_task::InputTracker;
///
/// let mut t = InputTracker::new(3);
/// assert_eq!(t.handle_watermark(0, 10), None);      // channels 1 and 2 still at -inf
/// assert_eq!(t.handle_watermark(1, 20), None);
/// assert_eq!(t.handle_watermark(2, 5), Some(5));    // min(10, 20, 5)
/// assert_eq!(t.handle_watermark(2, 30), Some(10));  // min(10, 20, 30)
/// assert_eq!(t.handle_end(0), Some(20));            // channel 0 no longer counts
/// assert_eq!(t.handle_end(1), Some(30));
/// assert!(!t.all_ended());
/// assert_eq!(t.handle_end(2), Some(i64::MAX));      // all ended: event time is complete
/// assert!(t.all_ended());
/// ```
#[derive(Clone, Debug)]
pub struct InputTracker {
    watermarks: Vec<i64>,
    ended: Vec<bool>,
    frontier: i64,
    open: usize,
}

impl InputTracker {
    /// Tracks `channels` input channels, numbered `0..channels`.
    pub fn new(channels: usize) -> Self {
        InputTracker {
            watermarks: vec![i64::MIN; channels],
            ended: vec![false; channels],
            frontier: i64::MIN,
            open: channels,
        }
    }

    /// The current frontier.
    pub fn frontier(&self) -> i64 {
        self.frontier
    }

    /// Whether every channel ended (true at once for a subtask without inputs).
    pub fn all_ended(&self) -> bool {
        self.open == 0
    }

    /// Channel `ch` announced watermark `wm`; returns the new frontier if it advanced.
    pub fn handle_watermark(&mut self, ch: usize, wm: i64) -> Option<i64> {
        if self.ended.get(ch).copied().unwrap_or(true) {
            return None;
        }
        if wm > self.watermarks[ch] {
            self.watermarks[ch] = wm;
        }
        self.advance()
    }

    /// Channel `ch` ended; returns the new frontier if it advanced.
    pub fn handle_end(&mut self, ch: usize) -> Option<i64> {
        match self.ended.get_mut(ch) {
            Some(e) if !*e => {
                *e = true;
                self.open -= 1;
            }
            _ => return None,
        }
        self.advance()
    }

    fn advance(&mut self) -> Option<i64> {
        let min = self
            .watermarks
            .iter()
            .zip(&self.ended)
            .filter(|(_, e)| !**e)
            .map(|(w, _)| *w)
            .min()
            .unwrap_or(i64::MAX);
        (min > self.frontier).then(|| {
            self.frontier = min;
            min
        })
    }
}

/// Bounded-out-of-orderness watermarks: the largest timestamp seen minus the bound.
///
/// ```
/// use sluice_task::WatermarkGenerator;
/// let mut g = WatermarkGenerator::new(100);
/// g.observe(1_000);
/// g.observe(900);
/// assert_eq!(g.poll(), Some(899));   // 1000 - 100 - 1
/// assert_eq!(g.poll(), None);        // unchanged
/// ```
#[derive(Clone, Debug)]
pub struct WatermarkGenerator {
    bound: i64,
    max_seen: i64,
    emitted: i64,
}

impl WatermarkGenerator {
    /// Allows records up to `max_out_of_orderness_ms` late.
    pub fn new(max_out_of_orderness_ms: u64) -> Self {
        WatermarkGenerator {
            bound: i64::try_from(max_out_of_orderness_ms).unwrap_or(i64::MAX),
            max_seen: i64::MIN,
            emitted: i64::MIN,
        }
    }

    /// A record with event time `ts` passed.
    pub fn observe(&mut self, ts: i64) {
        self.max_seen = self.max_seen.max(ts);
    }

    /// The watermark to emit, if it advanced since the last call.
    pub fn poll(&mut self) -> Option<i64> {
        let wm = self.max_seen.saturating_sub(self.bound).saturating_sub(1);
        (self.max_seen != i64::MIN && wm > self.emitted).then(|| {
            self.emitted = wm;
            wm
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the interleaving, the frontier never goes back, never
        /// passes any open channel's watermark, and ends at +inf.
        #[test]
        fn frontier_is_monotone_and_bounded_by_every_open_channel(
            events in proptest::collection::vec((0usize..4, proptest::option::of(-1000i64..1000)), 0..80)
        ) {
            let mut t = InputTracker::new(4);
            let mut last = i64::MIN;
            for (ch, wm) in events {
                let moved = match wm { Some(w) => t.handle_watermark(ch, w), None => t.handle_end(ch) };
                if let Some(f) = moved {
                    prop_assert!(f > last);
                    last = f;
                }
                prop_assert_eq!(t.frontier(), last);
                for c in 0..4 {
                    if !t.ended[c] {
                        prop_assert!(t.frontier() <= t.watermarks[c]);
                    }
                }
            }
            for c in 0..4 { t.handle_end(c); }
            prop_assert_eq!(t.frontier(), i64::MAX);
        }
    }
}
