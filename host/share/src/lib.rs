//! A process's resources shared between tenants: its cores through a fair
//! gate ([`gate`], deciding with [`fair`]), and live component instances
//! and guest memory through capped accounts ([`caps`]).
//!
//! TaskManagers use both: every task thread enters its tenant's lane, and
//! every instance is claimed from its tenant's account (and its job's)
//! before it is created. Nothing here knows about wasm or the cluster.

#![warn(missing_docs)]

pub mod caps;
pub mod fair;
pub mod gate;

pub use caps::{Account, CapExceeded, Caps, Claim};
pub use gate::{Entered, Gate, Lane, LaneUsage, blocking, yield_point};
