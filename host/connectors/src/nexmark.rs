//! The Nexmark benchmark's event stream (`sluice-nexmark`'s generator) as a
//! source: each record's value is one encoded event, its timestamp the
//! event's time.

use sluice_nexmark::{Generator, GeneratorConfig};
use sluice_types::BatchBuilder;

use crate::datagen::Split;
use crate::{ConnectorError, Poll, Source};

/// Subtask `s` of `p` emits events `s, s + p, ...` of the one stream, so
/// the stream is the same at any parallelism. A subtask restored with
/// several sequences (from a checkpoint at a higher parallelism) merges
/// them in event order, so within a subtask event time never goes back and
/// nothing falls behind its watermark.
pub(crate) struct NexmarkSource {
    generator: Generator,
    splits: Vec<Split>,
}

impl NexmarkSource {
    pub(crate) fn new(config: GeneratorConfig, subtask: u32, parallelism: u32) -> Self {
        Self::resume(config, vec![Split::new(subtask, parallelism)])
    }

    pub(crate) fn resume(config: GeneratorConfig, splits: Vec<Split>) -> Self {
        NexmarkSource {
            generator: Generator::new(config),
            splits: splits.into_iter().filter(Split::valid).collect(),
        }
    }
}

impl Source for NexmarkSource {
    fn poll(&mut self, max: usize, out: &mut BatchBuilder) -> Result<Poll, ConnectorError> {
        let count = self.generator.config().events;
        for _ in 0..max {
            // The sequence with the earliest next event (event time grows
            // with the index).
            let Some(split) = self
                .splits
                .iter_mut()
                .filter(|s| !s.done(count))
                .min_by_key(|s| s.next())
            else {
                break;
            };
            let Some(i) = split.take(count) else { break };
            let event = self.generator.event(i);
            out.push_with(None, Some(event.date_time()), |data| {
                event.encode_into(data)
            });
        }
        Ok(Split::poll(&self.splits, count))
    }

    fn snapshot(&self) -> Vec<u8> {
        Split::snapshot(&self.splits)
    }
}

#[cfg(test)]
mod tests {
    use sluice_nexmark::Event;

    use super::*;

    fn drain(source: &mut NexmarkSource, max: usize) -> Vec<(u64, i64)> {
        let mut b = BatchBuilder::new();
        source.poll(max, &mut b).expect("no io");
        b.take()
            .iter()
            .map(|r| {
                let e = Event::decode(r.value).expect("an event");
                assert_eq!(r.timestamp, Some(e.date_time()));
                let id = match &e {
                    Event::Person(p) => p.id,
                    Event::Auction(a) => a.id,
                    Event::Bid(b) => b.price,
                };
                (id, e.date_time())
            })
            .collect()
    }

    #[test]
    fn a_subtask_resumed_with_several_sequences_keeps_event_time_in_order() {
        let config = GeneratorConfig {
            events: 3000,
            tps: 1000,
            ..GeneratorConfig::default()
        };
        // Three subtasks emit some and snapshot; one takes all three over.
        let mut states = Vec::new();
        let mut seen = Vec::new();
        for s in 0..3 {
            let mut g = NexmarkSource::new(config, s, 3);
            seen.extend(drain(&mut g, 100 + 50 * s as usize));
            states.push(g.snapshot());
        }
        let splits: Vec<Split> = states
            .iter()
            .flat_map(|st| postcard::from_bytes::<Vec<Split>>(st).expect("state"))
            .collect();
        let mut g = NexmarkSource::resume(config, splits);
        let rest = drain(&mut g, 10_000);
        assert!(
            rest.windows(2).all(|w| w[0].1 <= w[1].1),
            "event time went back"
        );
        seen.extend(rest);
        assert_eq!(seen.len(), 3000);
    }

    #[test]
    fn subtasks_split_one_stream_and_resume_it_at_another_parallelism() {
        let config = GeneratorConfig {
            events: 500,
            ..GeneratorConfig::default()
        };
        let mut whole = NexmarkSource::new(config, 0, 1);
        let expected = drain(&mut whole, 1000);
        assert_eq!(expected.len(), 500);
        // Two subtasks emit some, snapshot; three take over from there.
        let mut seen = Vec::new();
        let mut states = Vec::new();
        for s in 0..2 {
            let mut g = NexmarkSource::new(config, s, 2);
            let part = drain(&mut g, 60);
            assert!(part.windows(2).all(|w| w[0].1 <= w[1].1), "time goes on");
            seen.extend(part);
            states.push(g.snapshot());
        }
        for s in 0..3usize {
            let mine: Vec<Split> = states
                .iter()
                .enumerate()
                .filter(|(old, _)| old % 3 == s)
                .flat_map(|(_, st)| postcard::from_bytes::<Vec<Split>>(st).expect("state"))
                .collect();
            let mut g = NexmarkSource::resume(config, mine);
            seen.extend(drain(&mut g, 1000));
        }
        let (mut seen, mut expected) = (seen, expected);
        seen.sort_unstable();
        expected.sort_unstable();
        assert_eq!(seen, expected);
    }
}
