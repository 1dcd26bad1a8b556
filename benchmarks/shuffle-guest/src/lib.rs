//! The QUIC shuffle benchmark's job: `records=N` generated records (values
//! padded to `value-bytes=B`), spread
//! round-robin (rebalance) from every generator subtask to every sink
//! subtask. With two subtasks on two TaskManagers exactly half the records
//! cross between the TaskManagers; no guest code runs per record, so the
//! job measures the data plane.

use sluice_sdk::prelude::*;

struct Shuffle;

impl Application for Shuffle {
    fn operators() -> Vec<OperatorDef> {
        Vec::new()
    }

    fn plan(args: &Args) -> Result<Graph, Error> {
        let mut g = Graph::new();
        let generate = g.add(
            Node::connector("generate", "datagen")
                .config("count", args.parse_or::<u64>("records", 20_000_000)?)
                .config("value-bytes", args.parse_or::<u64>("value-bytes", 0)?),
        );
        let discard = g.add(Node::connector("discard", "blackhole"));
        g.rebalance(&generate, &discard);
        Ok(g)
    }
}

sluice_sdk::export_app!(Shuffle);
