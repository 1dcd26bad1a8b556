//! The Nexmark benchmark's events (persons, auctions, bids) and a
//! deterministic generator of them: one source of truth for the host's
//! `nexmark` source connector, which generates the stream, and for the
//! guests that run the queries, which decode it. Depends on nothing of
//! Sluice's, so a guest can use it as it is.
//!
//! The generator follows the Nexmark reference generator (nexmark-flink):
//! the same 1 : 3 : 46 proportions of persons, auctions and bids, the same
//! id bookkeeping (hot sellers, bidders and auctions, ids running a little
//! ahead of the last one created), the same field distributions (log-uniform
//! prices, names, cities and states from the same lists, padding to the same
//! average sizes). Where the reference is not reproducible it is made so:
//! every event's random draws come from a SplitMix64 stream seeded with its
//! event id, the padding text and URL tables from fixed seeds, and event
//! time starts at a fixed base. The stream is one global sequence: subtask
//! `s` of `p` generates events `s, s + p, ...`, so a query's result does not
//! depend on the parallelism. Two deliberate differences from the reference
//! are documented on [`Generator`].

#![warn(missing_docs)]

mod generator;
mod model;
mod random;

pub use generator::{Generator, GeneratorConfig};
pub use model::{Auction, Bid, DecodeError, Event, Person};
pub use random::SplitMix64;
