//! WASI waits a task can stop. A guest that sleeps (`std::thread::sleep`,
//! `pollable.block`, `poll`) waits inside a host call, where no wasm runs
//! and so no epoch tick can interrupt it. These replace wasmtime-wasi's
//! `wasi:io/poll` with the same waits taken in slices: between slices the
//! call's cancel flag and deadline are checked, and the whole wait holds no
//! core of the fair gate ([`sluice_share::blocking`]).

use std::time::{Duration, Instant};

use wasmtime::Result;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::io::poll as async_poll;
use wasmtime_wasi::p2::bindings::sync::io::poll as sync_poll;
use wasmtime_wasi::runtime::in_tokio;

use crate::host::HostState;
use crate::instance::{CancelCheck, Interrupted};

/// The longest a guest waits between two looks at its cancel flag and
/// deadline: how late a cancel of a sleeping call can be.
const SLICE: Duration = Duration::from_millis(20);

/// A call's view of its waits: the resources it waits on, and what may end
/// the wait early.
pub(crate) struct Waits<'a> {
    table: &'a mut ResourceTable,
    deadline: Option<Instant>,
    cancelled: Option<&'a CancelCheck>,
}

impl<'a> Waits<'a> {
    pub(crate) fn new(
        table: &'a mut ResourceTable,
        deadline: Option<Instant>,
        cancelled: Option<&'a CancelCheck>,
    ) -> Self {
        Waits {
            table,
            deadline,
            cancelled,
        }
    }

    /// Runs `wait` (a future over the table) for at most a slice at a time
    /// until it finishes, stopping with [`Interrupted`] once the task is
    /// cancelled or the call's deadline has passed.
    fn sliced<R>(
        &mut self,
        mut wait: impl for<'t> FnMut(
            &'t mut ResourceTable,
        )
            -> std::pin::Pin<Box<dyn Future<Output = Result<R>> + Send + 't>>,
    ) -> Result<R> {
        sluice_share::blocking(|| {
            loop {
                if self.cancelled.is_some_and(|c| c()) {
                    return Err(Interrupted::Cancelled.into());
                }
                let slice = match self.deadline {
                    Some(d) => match d.checked_duration_since(Instant::now()) {
                        Some(left) if !left.is_zero() => left.min(SLICE),
                        _ => return Err(Interrupted::Deadline.into()),
                    },
                    None => SLICE,
                };
                let fut = wait(self.table);
                // The timer is made inside the runtime `in_tokio` enters.
                if let Ok(done) = in_tokio(async { tokio::time::timeout(slice, fut).await }) {
                    return done;
                }
            }
        })
    }
}

/// The same resource, borrowed again for one more slice of a wait.
fn again(p: &Resource<DynPollable>) -> Resource<DynPollable> {
    Resource::new_borrow(p.rep())
}

impl sync_poll::Host for Waits<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> Result<Vec<u32>> {
        self.sliced(|table| {
            let list = pollables.iter().map(again).collect();
            Box::pin(async_poll::Host::poll(table, list))
        })
    }
}

impl sync_poll::HostPollable for Waits<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> Result<bool> {
        sync_poll::HostPollable::ready(self.table, pollable)
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> Result<()> {
        self.sliced(|table| Box::pin(async_poll::HostPollable::block(table, again(&pollable))))
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> Result<()> {
        sync_poll::HostPollable::drop(self.table, pollable)
    }
}

struct HasWaits;

impl HasData for HasWaits {
    type Data<'a> = Waits<'a>;
}

/// Puts the sliced waits in place of wasmtime-wasi's `wasi:io/poll`
/// (already in `linker`).
pub(crate) fn shadow_poll(linker: &mut Linker<HostState>) -> Result<()> {
    linker.allow_shadowing(true);
    let added = sync_poll::add_to_linker::<HostState, HasWaits>(linker, HostState::waits);
    linker.allow_shadowing(false);
    added
}
