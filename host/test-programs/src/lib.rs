//! Paths of the guest components under `examples/`, built for wasm32-wasip2
//! by this crate's build script. Only tests depend on it.

include!(concat!(env!("OUT_DIR"), "/programs.rs"));
