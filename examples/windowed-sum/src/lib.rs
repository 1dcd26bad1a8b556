//! Per-key sums over tumbling event-time windows, fed by a generator.
//!
//! `keys=K events=N window_ms=W output=DIR`: subtask `s` of the generator
//! emits events `i = s, s+p, s+2p, ...` below N with key `k{i % K}`, value
//! `i`, event time `i * 10` ms (so out-of-order across subtasks). A keyed
//! operator sums the values per key and window `[t - t % W, +W)` and emits
//! `KEY<TAB>WINDOW_START<TAB>SUM` when the watermark passes the window's end.

use serde::{Deserialize, Serialize};
use sluice_sdk::prelude::*;

struct WindowedSum;

/// Generates the events; its position is the next sequence number.
struct Events {
    keys: u64,
    events: u64,
    next: u64,
    step: u64,
}

impl Source for Events {
    fn open(&mut self, subtask: u32, parallelism: u32) -> Result<(), Error> {
        self.next = u64::from(subtask);
        self.step = u64::from(parallelism);
        Ok(())
    }

    fn poll(&mut self, max: u32, out: &mut Collector) -> Result<SourceStatus, Error> {
        for _ in 0..max {
            if self.next >= self.events {
                return Ok(SourceStatus::Finished);
            }
            let i = self.next;
            let key = format!("k{}", i % self.keys);
            out.emit_at(Some(key.as_bytes()), &i.to_le_bytes(), (i * 10) as i64);
            self.next += self.step;
        }
        // Everything this subtask emits later is newer than its last event.
        Ok(SourceStatus::Watermark(
            ((self.next - self.step) * 10) as i64,
        ))
    }

    fn snapshot(&self) -> Vec<u8> {
        self.next.to_le_bytes().to_vec()
    }

    fn restore(&mut self, position: &[u8]) -> Result<(), Error> {
        let bytes: [u8; 8] = position
            .try_into()
            .map_err(|_| failed("corrupt generator position"))?;
        self.next = u64::from_le_bytes(bytes);
        Ok(())
    }
}

/// Open windows of one key: window start → sum.
#[derive(Default, Serialize, Deserialize)]
struct Windows(Vec<(i64, u64)>);

struct Sum {
    window_ms: i64,
}

impl KeyedProcess for Sum {
    type State = Windows;

    fn process(
        &mut self,
        ctx: &mut KeyedContext<'_, Windows>,
        r: Record<'_>,
        _out: &mut Collector,
    ) -> Result<(), Error> {
        let ts = r
            .timestamp
            .ok_or_else(|| failed("event without a timestamp"))?;
        let value = u64::from_le_bytes(
            r.value
                .try_into()
                .map_err(|_| failed("value is not a u64"))?,
        );
        let start = ts - ts.rem_euclid(self.window_ms);
        if start + self.window_ms <= ctx.watermark() {
            return Ok(()); // late: its window already fired
        }
        let windows = ctx.state_or_default();
        match windows.0.iter_mut().find(|(s, _)| *s == start) {
            Some((_, sum)) => *sum += value,
            None => windows.0.push((start, value)),
        }
        ctx.register_event_timer(start + self.window_ms - 1);
        Ok(())
    }

    fn on_timer(
        &mut self,
        ctx: &mut KeyedContext<'_, Windows>,
        timer: Timer,
        out: &mut Collector,
    ) -> Result<(), Error> {
        let key = String::from_utf8_lossy(ctx.key()).into_owned();
        let window_ms = self.window_ms;
        let Some(windows) = ctx.state() else {
            return Ok(());
        };
        windows.0.retain(|&(start, sum)| {
            if start + window_ms - 1 <= timer.time {
                out.emit(format!("{key}\t{start}\t{sum}").as_bytes());
                false
            } else {
                true
            }
        });
        if windows.0.is_empty() {
            ctx.clear_state();
        }
        Ok(())
    }
}

impl Application for WindowedSum {
    fn operators() -> Vec<OperatorDef> {
        vec![
            source("events", |cfg| {
                Ok(Events {
                    keys: cfg.parse_or("keys", 10)?,
                    events: cfg.parse_or("events", 100_000)?,
                    next: 0,
                    step: 1,
                })
            })
            .describe("keyed events with event time"),
            keyed_process("sum", |cfg| {
                Ok(Sum {
                    window_ms: cfg.parse_or("window_ms", 1000)?,
                })
            })
            .describe("per-key sums over tumbling event-time windows"),
        ]
    }

    fn plan(args: &Args) -> Result<Graph, Error> {
        let window_ms: i64 = args.parse_or("window_ms", 1000)?;
        if window_ms <= 0 {
            return Err(invalid_config("window_ms must be positive"));
        }
        let mut g = Graph::new();
        let events = g.add(
            Node::guest("events", "events")
                .config("keys", args.parse_or::<u64>("keys", 10)?)
                .config("events", args.parse_or::<u64>("events", 100_000)?),
        );
        let sum = g.add(Node::guest("sum", "sum").config("window_ms", window_ms));
        let write =
            g.add(Node::connector("write", "file-sink").config("path", args.require("output")?));
        g.hash(&events, &sum).forward(&sum, &write);
        Ok(g)
    }
}

sluice_sdk::export_app!(WindowedSum);
