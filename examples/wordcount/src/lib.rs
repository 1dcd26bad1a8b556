//! Word count: the "hello world" of stream processing.
//!
//! `input=PATH output=DIR`: reads lines from PATH, splits them into words
//! (maximal runs of ASCII letters and digits, lowercased), counts each word
//! in keyed state partitioned by hash, and writes `WORD<TAB>COUNT` lines to
//! one part file per sink subtask under DIR once the input ends.

use sluice_sdk::prelude::*;

/// The application (public so benchmarks can run it natively).
pub struct WordCount;

/// Emits every word of a line as a keyed record with an empty value.
fn split(line: Record<'_>, out: &mut Collector) -> Result<(), Error> {
    let mut word = Vec::new();
    for &b in line.value.iter().chain(std::iter::once(&b' ')) {
        if b.is_ascii_alphanumeric() {
            word.push(b.to_ascii_lowercase());
        } else if !word.is_empty() {
            out.emit_keyed(&word, b"");
            word.clear();
        }
    }
    Ok(())
}

/// Counts records per key; emits the totals when the input ends.
struct Count;

impl KeyedProcess for Count {
    type State = u64;

    fn process(
        &mut self,
        ctx: &mut KeyedContext<'_, u64>,
        _record: Record<'_>,
        _out: &mut Collector,
    ) -> Result<(), Error> {
        if ctx.state().is_none() {
            // Event time ends when a bounded input does: fire then.
            ctx.register_event_timer(i64::MAX);
        }
        *ctx.state_or_default() += 1;
        Ok(())
    }

    fn on_timer(
        &mut self,
        ctx: &mut KeyedContext<'_, u64>,
        _timer: Timer,
        out: &mut Collector,
    ) -> Result<(), Error> {
        let count = ctx.state().take().unwrap_or(0);
        let mut line = ctx.key().to_vec();
        line.push(b'\t');
        line.extend_from_slice(count.to_string().as_bytes());
        out.emit(&line);
        Ok(())
    }
}

impl Application for WordCount {
    fn operators() -> Vec<OperatorDef> {
        vec![
            flat_map("split", split).describe("lines to lowercase ASCII words"),
            keyed_process("count", |_| Ok(Count)).describe("count per word"),
        ]
    }

    fn plan(args: &Args) -> Result<Graph, Error> {
        let mut g = Graph::new();
        let read =
            g.add(Node::connector("read", "file-source").config("path", args.require("input")?));
        let split = g.add(Node::guest("split", "split"));
        let count = g.add(Node::guest("count", "count"));
        let write =
            g.add(Node::connector("write", "file-sink").config("path", args.require("output")?));
        g.forward(&read, &split)
            .hash(&split, &count)
            .forward(&count, &write);
        Ok(g)
    }
}

sluice_sdk::export_app!(WordCount);
