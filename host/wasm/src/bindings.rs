//! Host bindings generated from `wit/` (the single source of truth).

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "sluice:app/application",
    // Host calls that can be abused (huge or endless names and messages)
    // trap with a named limit instead of working for the guest unbounded.
    imports: {
        "sluice:app/log": trappable,
        "sluice:app/metrics": trappable,
    },
});
