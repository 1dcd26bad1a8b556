//! Write Sluice operators in plain Rust.
//!
//! An application is one `.wasm` component: it names its operators and builds
//! a job's dataflow graph from the job's arguments. This SDK does the rest —
//! batching across the component boundary, chaining operators inside one call,
//! partitioning keyed state by key group, timers, snapshots and restore.
//!
//! ```
//! use sluice_sdk::prelude::*;
//!
//! struct Shout;
//!
//! impl Application for Shout {
//!     fn operators() -> Vec<OperatorDef> {
//!         vec![map("upper", |r: Record<'_>, out: &mut Collector| {
//!             out.emit(&r.value.to_ascii_uppercase());
//!             Ok(())
//!         })]
//!     }
//!
//!     fn plan(args: &Args) -> Result<Graph, Error> {
//!         let mut g = Graph::new();
//!         let read = g.add(Node::connector("read", "file-source").config("path", args.require("input")?));
//!         let upper = g.add(Node::guest("upper", "upper"));
//!         let print = g.add(Node::connector("print", "print"));
//!         g.forward(&read, &upper).forward(&upper, &print);
//!         Ok(g)
//!     }
//! }
//!
//! // In the application crate: `sluice_sdk::export_app!(Shout);`
//!
//! // Operators run natively in tests, through the same chain runtime:
//! let mut h = sluice_sdk::testing::Harness::new::<Shout>(&["upper"]).unwrap();
//! let out = h.process(0, &[(None, b"hello".as_slice())]).unwrap();
//! assert_eq!(out[0].value, b"HELLO");
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2` and run with
//! `sluice run target/wasm32-wasip2/release/NAME.wasm --arg input=FILE`.
//! `examples/wordcount` in the Sluice repository is a complete application.
#![warn(missing_docs)]

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "sluice:app/application",
        pub_export_macro: true,
        default_bindings_module: "sluice_sdk::bindings",
        export_macro_name: "__export_bindings",
    });
}

mod bytes;
mod join;
mod keyed;
mod operator;
mod plan;
mod record;
#[doc(hidden)]
pub mod runtime;
pub mod testing;
mod window;

#[cfg(test)]
mod golden;

/// How records travel along an edge (for [`Graph::edge`]).
pub use bindings::sluice::app::plan::Partitioning;
pub use join::{Interval, IntervalJoin, interval_join};
pub use keyed::{KeyedContext, KeyedProcess, TimeDomain, Timer};
pub use operator::{
    Application, Source, SourceStatus, co_process, filter, flat_map, keyed_process, map, sink,
    source,
};
pub use operator::{Config, OperatorDef};
pub use plan::{Args, Graph, Node, NodeId};
pub use record::{Collector, Record, ValueWriter};
pub use window::{Window, WindowAggregate, Windows, co_window, keyed_window};

/// Errors an operator or a plan function reports to the user.
pub type Error = bindings::sluice::app::types::Error;

/// `Error::InvalidConfig` with a message.
pub fn invalid_config(message: impl Into<String>) -> Error {
    Error::InvalidConfig(message.into())
}

/// `Error::Failed` with a message.
pub fn failed(message: impl Into<String>) -> Error {
    Error::Failed(message.into())
}

/// Logs a message into the task's log on the host (stderr when the
/// operator runs natively, e.g. under [`testing::Harness`]).
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::sluice::app::log::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Log levels.
pub use bindings::sluice::app::log::Level as LogLevel;

/// Processing time (ms since the epoch) as the host fixed it for this call.
pub fn processing_time() -> i64 {
    #[cfg(target_arch = "wasm32")]
    return bindings::sluice::app::clock::processing_time();
    #[cfg(not(target_arch = "wasm32"))]
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Adds to a user-defined counter (exported per job, operator and subtask).
/// Each call crosses into the host: count locally and add once per batch.
/// Natively (in tests) counters are not recorded.
pub fn counter_add(name: &str, delta: u64) {
    #[cfg(target_arch = "wasm32")]
    bindings::sluice::app::metrics::counter_add(name, delta);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (name, delta);
}

/// Everything an operator author needs.
pub mod prelude {
    pub use crate::{
        Application, Args, Collector, Config, Error, Graph, Interval, IntervalJoin, KeyedContext,
        KeyedProcess, Node, NodeId, OperatorDef, Partitioning, Record, Source, SourceStatus,
        TimeDomain, Timer, Window, WindowAggregate, Windows, co_process, co_window, failed, filter,
        flat_map, interval_join, invalid_config, keyed_process, keyed_window, map, sink, source,
    };
}

/// Exports an [`Application`] as the component's implementation of the
/// Sluice contract. Use it once, in the application's `lib.rs`. It expands
/// to nothing on targets other than wasm32, so the same crate also builds
/// natively (for tests and benchmarks through [`testing::Harness`]).
#[macro_export]
macro_rules! export_app {
    ($app:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        struct __SluiceExports;

        #[cfg(target_arch = "wasm32")]
        impl $crate::bindings::exports::sluice::app::app::Guest for __SluiceExports {
            fn operators() -> ::std::vec::Vec<$crate::bindings::exports::sluice::app::app::OperatorInfo> {
                $crate::runtime::operators::<$app>()
            }
            fn plan(
                args: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::std::result::Result<$crate::bindings::sluice::app::plan::Graph, $crate::Error> {
                $crate::runtime::plan::<$app>(args)
            }
        }

        #[cfg(target_arch = "wasm32")]
        impl $crate::bindings::exports::sluice::app::task::Guest for __SluiceExports {
            type Chain = $crate::runtime::ChainImpl<$app>;
        }

        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_bindings!(__SluiceExports with_types_in $crate::bindings);
    };
}
