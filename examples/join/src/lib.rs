//! A two-input keyed operator: joins two generated streams by key.
//!
//! `left=N right=M keys=K output=DIR`: two data generators emit N and M
//! records keyed `k0..k{K-1}`; both are partitioned by key into `join`, which
//! keeps per key how many records and what sum of values came from each
//! input and, when both inputs end, writes `KEY<TAB>LEFT_COUNT<TAB>LEFT_SUM<TAB>RIGHT_COUNT<TAB>RIGHT_SUM`.

use serde::{Deserialize, Serialize};
use sluice_sdk::prelude::*;

struct Join;

/// Per key: (count, sum) from each input.
#[derive(Default, Serialize, Deserialize)]
struct Sides([(u64, u64); 2]);

struct Pair;

impl KeyedProcess for Pair {
    type State = Sides;

    fn process(
        &mut self,
        ctx: &mut KeyedContext<'_, Sides>,
        r: Record<'_>,
        _: &mut Collector,
    ) -> Result<(), Error> {
        let v: u64 = r
            .value_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| failed("value is not a number"))?;
        let input = ctx.input() as usize;
        if ctx.state().is_none() {
            ctx.register_event_timer(i64::MAX);
        }
        let side = &mut ctx.state_or_default().0[input];
        side.0 += 1;
        side.1 += v;
        Ok(())
    }

    fn on_timer(
        &mut self,
        ctx: &mut KeyedContext<'_, Sides>,
        _: Timer,
        out: &mut Collector,
    ) -> Result<(), Error> {
        let key = String::from_utf8_lossy(ctx.key()).into_owned();
        let Some(Sides([l, r])) = ctx.state().take() else {
            return Ok(());
        };
        out.emit(format!("{key}\t{}\t{}\t{}\t{}", l.0, l.1, r.0, r.1).as_bytes());
        Ok(())
    }
}

impl Application for Join {
    fn operators() -> Vec<OperatorDef> {
        vec![co_process("join", |_| Ok(Pair)).describe("per-key counts and sums of two inputs")]
    }

    fn plan(args: &Args) -> Result<Graph, Error> {
        let keys: u64 = args.parse_or("keys", 10)?;
        let mut g = Graph::new();
        let left = g.add(
            Node::connector("left", "datagen")
                .config("count", args.parse_or::<u64>("left", 1000)?)
                .config("keys", keys),
        );
        let right = g.add(
            Node::connector("right", "datagen")
                .config("count", args.parse_or::<u64>("right", 1000)?)
                .config("keys", keys),
        );
        let join = g.add(Node::guest("join", "join"));
        let write =
            g.add(Node::connector("write", "file-sink").config("path", args.require("output")?));
        g.edge(&left, &join, Partitioning::Hash, 0)
            .edge(&right, &join, Partitioning::Hash, 1)
            .forward(&join, &write);
        Ok(g)
    }
}

sluice_sdk::export_app!(Join);
