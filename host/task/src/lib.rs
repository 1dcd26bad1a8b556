//! The task runtime's core, sans IO: what a subtask does with the events on
//! its input channels and the records its chain emits, independent of how
//! channels are implemented (in-process queues or QUIC streams).
//!
//! - [`InputTracker`] follows each input channel's watermark and end of input
//!   and reports when the subtask's watermark frontier advances.
//! - [`OutputRouter`] partitions emitted records among output channels
//!   (forward, hash by key group, rebalance, broadcast) into batches.
//! - [`WatermarkGenerator`] derives watermarks from record timestamps
//!   (bounded out-of-orderness).
//! - [`BarrierAligner`] aligns checkpoint barriers across input channels
//!   (exactly once) or only tracks them (at least once).

#![warn(missing_docs)]

mod barrier;
mod input;
mod output;

pub use barrier::{AlignmentMode, BarrierAligner, BarrierOutcome};
pub use input::{InputTracker, WatermarkGenerator};
pub use output::{BatchLimits, OutputRouter, RouteError};
