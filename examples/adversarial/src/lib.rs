//! Misbehaving operators, for testing the sandbox: `mode=spin` loops
//! forever, `mode=bomb` allocates until it hits the memory limit,
//! `mode=panic` panics, `mode=plan-spin` loops forever in the plan function.

use std::hint::black_box;

use sluice_sdk::prelude::*;

struct Adversarial;

impl Application for Adversarial {
    fn operators() -> Vec<OperatorDef> {
        vec![
            map("spin", |r: Record<'_>, out: &mut Collector| {
                let mut x = r.value.len() as u64;
                loop {
                    x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                    if x == 42 {
                        break;
                    }
                }
                out.emit(&x.to_le_bytes());
                Ok(())
            }),
            map("bomb", |r: Record<'_>, out: &mut Collector| {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                    if hoard.len() == usize::MAX {
                        out.emit(r.value);
                        return Ok(());
                    }
                }
            }),
            map("panic", |r: Record<'_>, _out: &mut Collector| {
                panic!(
                    "operator gave up on record {:?}",
                    String::from_utf8_lossy(r.value)
                );
            }),
        ]
    }

    fn plan(args: &Args) -> Result<Graph, Error> {
        let mode = args.require("mode")?;
        if mode == "plan-spin" {
            let mut n = 0u64;
            while black_box(n) != u64::MAX {
                n = black_box(n.wrapping_add(2));
            }
        }
        if !["spin", "bomb", "panic"].contains(&mode) {
            return Err(invalid_config(format!("unknown mode `{mode}`")));
        }
        let mut g = Graph::new();
        let gen_ = g.add(Node::connector("gen", "datagen").config("count", 1000));
        let bad = g.add(Node::guest(mode, mode));
        let sink = g.add(Node::connector("sink", "blackhole"));
        g.forward(&gen_, &bad).forward(&bad, &sink);
        Ok(g)
    }
}

sluice_sdk::export_app!(Adversarial);
