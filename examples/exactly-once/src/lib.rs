//! The exactly-once checker: per-key sequence numbers through keyed state
//! and the file sink, to prove that failures and restores lose and repeat
//! nothing.
//!
//! `records=N keys=K output=DIR [rate=R]`: a generator (parallelism P, which
//! must divide K so each key comes from one generator subtask, in order)
//! emits indices `0..N`, index `i` under key `k{i % K}`, at most `R` records
//! per second per subtask. The keyed `check` operator expects each key's
//! indices in order (`k`, `k + K`, `k + 2K`, ...) and counts in its state
//! every gap (an index skipped: a lost record) and every duplicate (an index
//! seen again: a repeated record). It writes `KEY<TAB>INDEX` for every
//! record, and when the input ends `#KEY<TAB>SEEN<TAB>GAPS<TAB>DUPLICATES`.

use serde::{Deserialize, Serialize};
use sluice_sdk::prelude::*;

struct ExactlyOnce;

/// A key's progress.
#[derive(Default, Serialize, Deserialize)]
struct Sequence {
    /// The index expected next.
    next: u64,
    seen: u64,
    gaps: u64,
    duplicates: u64,
}

struct Check {
    keys: u64,
}

impl KeyedProcess for Check {
    type State = Sequence;

    fn process(
        &mut self,
        ctx: &mut KeyedContext<'_, Sequence>,
        record: Record<'_>,
        out: &mut Collector,
    ) -> Result<(), Error> {
        let text = core::str::from_utf8(record.value).map_err(|_| failed("value is not UTF-8"))?;
        let index: u64 = text
            .trim_end_matches('.')
            .parse()
            .map_err(|_| failed(format!("value `{text}` is not an index")))?;
        let first = ctx.state().is_none();
        let keys = self.keys;
        let seq = ctx.state_or_default();
        if first {
            // A key's first index is its number.
            seq.next = index % keys;
        }
        if index < seq.next {
            seq.duplicates += 1;
        } else {
            if index > seq.next {
                seq.gaps += (index - seq.next) / keys;
            }
            seq.next = index + keys;
        }
        seq.seen += 1;
        if first {
            ctx.register_event_timer(i64::MAX);
        }
        let mut line = ctx.key().to_vec();
        line.push(b'\t');
        line.extend_from_slice(index.to_string().as_bytes());
        out.emit(&line);
        Ok(())
    }

    fn on_timer(
        &mut self,
        ctx: &mut KeyedContext<'_, Sequence>,
        _timer: Timer,
        out: &mut Collector,
    ) -> Result<(), Error> {
        let Some(seq) = ctx.state().take() else {
            return Ok(());
        };
        let mut line = b"#".to_vec();
        line.extend_from_slice(ctx.key());
        line.extend_from_slice(
            format!("\t{}\t{}\t{}", seq.seen, seq.gaps, seq.duplicates).as_bytes(),
        );
        out.emit(&line);
        Ok(())
    }
}

impl Application for ExactlyOnce {
    fn operators() -> Vec<OperatorDef> {
        vec![
            keyed_process("check", |cfg| {
                Ok(Check {
                    keys: cfg.parse_or("keys", 100u64)?.max(1),
                })
            })
            .describe("checks each key's sequence for gaps and duplicates"),
        ]
    }

    fn plan(args: &Args) -> Result<Graph, Error> {
        let keys: u64 = args.parse_or("keys", 100)?;
        let mut g = Graph::new();
        let generate = g.add(
            Node::connector("generate", "datagen")
                .config("count", args.parse_or::<u64>("records", 1_000_000)?)
                .config("keys", keys)
                .config("rate", args.parse_or::<u64>("rate", 0)?),
        );
        let check = g.add(Node::guest("check", "check").config("keys", keys));
        let write =
            g.add(Node::connector("write", "file-sink").config("path", args.require("output")?));
        g.hash(&generate, &check).forward(&check, &write);
        Ok(g)
    }
}

sluice_sdk::export_app!(ExactlyOnce);
