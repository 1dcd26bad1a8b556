//! Records/s across the component boundary, there and back, for three batch
//! layouts: `list<list<u8>>` (one list per record), one buffer plus a list
//! of fixed-size metadata records (the layout of Sluice's `batch`), and one
//! buffer plus the same metadata packed as bytes.

use std::time::Instant;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({ path: "wit/layout.wit", world: "layout" });

struct State {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

const RECORDS: usize = 1 << 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: batch-layout LAYOUT_GUEST.wasm");
    let engine = Engine::new(Config::new().wasm_component_model(true)).expect("engine");
    let component = Component::from_file(&engine, &path).expect("layout guest");
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("wasi");
    let mut store = Store::new(
        &engine,
        State {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        },
    );
    let guest = Layout::instantiate(&mut store, &component, &linker).expect("instantiate");

    println!(
        "| record bytes | records/call | list<list<u8>> rec/s | buffer+meta rec/s | buffer+meta ÷ nested | buffer+meta bytes rec/s | bytes ÷ buffer+meta |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for value_len in [16usize, 100] {
        for per_call in [1usize, 64, 1024] {
            let nested: Vec<Vec<u8>> = (0..per_call).map(|i| vec![i as u8; value_len]).collect();
            let data: Vec<u8> = nested.concat();
            let meta: Vec<RecordMeta> = (0..per_call)
                .map(|_| RecordMeta {
                    key_len: u32::MAX,
                    value_len: value_len as u32,
                    timestamp: 0,
                })
                .collect();
            let packed: Vec<u8> = meta
                .iter()
                .flat_map(|m| {
                    let mut b = [0u8; 16];
                    b[..4].copy_from_slice(&m.key_len.to_le_bytes());
                    b[4..8].copy_from_slice(&m.value_len.to_le_bytes());
                    b[8..].copy_from_slice(&m.timestamp.to_le_bytes());
                    b
                })
                .collect();
            let calls = RECORDS / per_call;
            let (mut tn, mut tf, mut tp) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..5 {
                let start = Instant::now();
                for _ in 0..calls {
                    let out = guest.call_nested(&mut store, &nested).expect("nested");
                    assert_eq!(out.len(), per_call);
                }
                tn.push(start.elapsed().as_secs_f64());
                let start = Instant::now();
                for _ in 0..calls {
                    let (d, m) = guest.call_flat(&mut store, &data, &meta).expect("flat");
                    assert_eq!((d.len(), m.len()), (data.len(), per_call));
                }
                tf.push(start.elapsed().as_secs_f64());
                let start = Instant::now();
                for _ in 0..calls {
                    let (d, m) = guest
                        .call_packed(&mut store, &data, &packed)
                        .expect("packed");
                    assert_eq!((d.len(), m.len()), (data.len(), packed.len()));
                }
                tp.push(start.elapsed().as_secs_f64());
            }
            let records = (calls * per_call) as f64;
            let (n, f, p) = (
                records / median(tn),
                records / median(tf),
                records / median(tp),
            );
            println!(
                "| {value_len} | {per_call} | {n:.0} | {f:.0} | {:.2} | {p:.0} | {:.2} |",
                f / n,
                p / f
            );
        }
    }
}
