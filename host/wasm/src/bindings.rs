//! Host bindings generated from `wit/` (the single source of truth): the
//! current contract and every earlier version the cluster still serves.

/// `sluice:app@0.2.0` (`wit/sluice.wit`): batch metadata as bytes.
pub(crate) mod v2 {
    wasmtime::component::bindgen!({
        path: "../../wit/sluice.wit",
        world: "sluice:app/application",
        // Host calls that can be abused (huge or endless names and messages)
        // trap with a named limit instead of working for the guest unbounded.
        imports: {
            "sluice:app/log": trappable,
            "sluice:app/metrics": trappable,
        },
    });
}

/// `sluice:app@0.1.0` (`wit/v0.1/sluice.wit`): batch metadata as records.
pub(crate) mod v1 {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.1/sluice.wit",
        world: "sluice:app/application",
        imports: {
            "sluice:app/log": trappable,
            "sluice:app/metrics": trappable,
        },
    });
}
