//! A host source read ahead on a thread of its own.
//!
//! A source task used to make its records (generate, read and parse a file)
//! and then push them through its chain on one thread, one after the other.
//! Here a reader thread polls the source into whole batches while the task
//! runs the previous ones, so a source chain can use two cores where the
//! machine has them. What the task sees is unchanged: the same batches in
//! the same order, and a checkpoint's position is the one the source had
//! just after the last batch the task took, so nothing read ahead is in a
//! checkpoint and nothing is lost when the read-ahead batches are dropped.
//!
//! The reader runs in the task's tenant lane (`sluice_share::gate`), so its
//! CPU counts against the tenant's share like the task's own, and its CPU
//! time is added to the task's (`TaskCounters::cpu_ns`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use sluice_connectors::{Poll, Source};
use sluice_coord::TaskFailure;
use sluice_types::{Batch, BatchBuilder};

use crate::TaskCounters;
use crate::task::{Stop, panic_message};

/// Batches made ahead of the task (besides the one the reader is making).
const AHEAD: usize = 2;

/// One batch as the source made it, and the source's position after it.
pub(crate) struct Made {
    batch: Batch,
    poll: Poll,
    position: Vec<u8>,
}

/// A task's host source, polled a batch of `batch` records at a time,
/// on the task's thread or ahead of it on a reader thread.
pub(crate) enum ReadAhead {
    /// Polled on the task's thread when it asks.
    Inline {
        source: Box<dyn Source>,
        batch: usize,
    },
    /// Polled on a reader thread, up to [`AHEAD`] batches ahead.
    Thread {
        made: Receiver<Result<Made, Stop>>,
        /// The source's position after the last batch taken.
        position: Vec<u8>,
    },
}

impl ReadAhead {
    /// The source polled on the task's own thread.
    pub(crate) fn inline(source: Box<dyn Source>, batch: usize) -> Self {
        ReadAhead::Inline { source, batch }
    }

    /// Starts the reader thread, which owns `source` from now on (it stops
    /// when this is dropped, after at most the poll it is in).
    pub(crate) fn start(
        source: Box<dyn Source>,
        batch: usize,
        task: &str,
        lane: Option<sluice_share::Lane>,
        counters: Arc<TaskCounters>,
    ) -> std::io::Result<Self> {
        let position = source.snapshot();
        let (tx, made) = crossbeam_channel::bounded(AHEAD);
        std::thread::Builder::new()
            .name(format!("sluice-read {task}"))
            .spawn(move || {
                let _entered = lane.as_ref().map(sluice_share::Lane::enter);
                // A panic in the source fails the task, as it did when the
                // task's own thread polled it.
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    read(source, batch, &tx, &counters)
                }));
                if let Err(panic) = ran {
                    let _ = tx.send(Err(Stop::Failed(TaskFailure::recoverable(format!(
                        "the source hit an internal error: {}",
                        panic_message(&*panic)
                    )))));
                }
            })?;
        Ok(ReadAhead::Thread { made, position })
    }

    /// Appends the source's next batch to `out` (on a reader thread,
    /// waiting for it if need be, with the task's core handed back
    /// meanwhile).
    pub(crate) fn poll(&mut self, out: &mut BatchBuilder) -> Result<Poll, Stop> {
        let (made, position) = match self {
            ReadAhead::Inline { source, batch } => return Ok(source.poll(*batch, out)?),
            ReadAhead::Thread { made, position } => (made, position),
        };
        let next = match made.try_recv() {
            Ok(m) => Ok(m),
            Err(TryRecvError::Empty) => sluice_share::blocking(|| made.recv()),
            Err(TryRecvError::Disconnected) => Err(crossbeam_channel::RecvError),
        };
        // The reader stops only after sending an error or the end, and
        // nothing is polled after either.
        let next = next.map_err(|_| {
            Stop::Failed(TaskFailure::recoverable(
                "the source's reader thread stopped before the source ended",
            ))
        })??;
        out.append(next.batch);
        *position = next.position;
        Ok(next.poll)
    }

    /// The position to resume from: after every record polled so far.
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        match self {
            ReadAhead::Inline { source, .. } => source.snapshot(),
            ReadAhead::Thread { position, .. } => position.clone(),
        }
    }
}

fn read(
    mut source: Box<dyn Source>,
    batch: usize,
    tx: &Sender<Result<Made, Stop>>,
    counters: &TaskCounters,
) {
    let cpu_start = crate::thread_cpu_ns();
    let mut out = BatchBuilder::new();
    loop {
        sluice_share::yield_point();
        let made = source
            .poll(batch, &mut out)
            .map(|poll| Made {
                batch: out.take(),
                poll,
                position: source.snapshot(),
            })
            .map_err(Stop::from);
        let last = !matches!(
            made,
            Ok(Made {
                poll: Poll::More,
                ..
            })
        );
        counters.read_ahead_cpu_ns.store(
            crate::thread_cpu_ns().saturating_sub(cpu_start),
            Ordering::Relaxed,
        );
        let sent = match tx.try_send(made) {
            Ok(()) => true,
            Err(TrySendError::Full(made)) => sluice_share::blocking(|| tx.send(made)).is_ok(),
            // The task is gone.
            Err(TrySendError::Disconnected(_)) => false,
        };
        if !sent || last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_connectors::ConnectorError;
    use std::time::Duration;

    /// Records 0, 1, 2, ... up to `end`; its position is the next record.
    /// It fails at `fail_at` (an error, or a panic with `panics`), and says
    /// when it is dropped.
    struct Counting {
        next: u64,
        end: u64,
        fail_at: Option<u64>,
        panics: bool,
        dropped: Option<crossbeam_channel::Sender<()>>,
    }

    impl Counting {
        fn new(end: u64) -> Self {
            Counting {
                next: 0,
                end,
                fail_at: None,
                panics: false,
                dropped: None,
            }
        }
    }

    impl Drop for Counting {
        fn drop(&mut self) {
            if let Some(tx) = self.dropped.take() {
                let _ = tx.send(());
            }
        }
    }

    impl Source for Counting {
        fn poll(&mut self, max: usize, out: &mut BatchBuilder) -> Result<Poll, ConnectorError> {
            for _ in 0..max {
                if Some(self.next) == self.fail_at {
                    assert!(!self.panics, "the source broke at {}", self.next);
                    return Err(ConnectorError::Config {
                        node: "counting".into(),
                        message: format!("broke at {}", self.next),
                    });
                }
                if self.next == self.end {
                    return Ok(Poll::Finished);
                }
                out.push(None, &self.next.to_le_bytes(), Some(self.next as i64));
                self.next += 1;
            }
            Ok(Poll::More)
        }

        fn snapshot(&self) -> Vec<u8> {
            self.next.to_le_bytes().to_vec()
        }
    }

    fn counters() -> Arc<TaskCounters> {
        Arc::new(TaskCounters::new(&[]))
    }

    /// A batch's records (their values) and the position after it.
    type Polled = (Vec<u64>, Vec<u8>);

    /// Every batch polled, with the position snapshotted after each, and
    /// how the polling ended.
    fn drain(reader: &mut ReadAhead) -> (Vec<Polled>, Result<(), String>) {
        let mut seen = Vec::new();
        let mut out = BatchBuilder::new();
        loop {
            let poll = reader.poll(&mut out);
            let batch = out.take();
            let values = batch
                .iter()
                .map(|r| u64::from_le_bytes(r.value.try_into().expect("8 bytes")))
                .collect();
            seen.push((values, reader.snapshot()));
            match poll {
                Ok(Poll::More) => {}
                Ok(Poll::Finished) => return (seen, Ok(())),
                Err(Stop::Failed(f)) => return (seen, Err(f.message)),
                Err(Stop::Canceled) => return (seen, Err("canceled".into())),
            }
        }
    }

    #[test]
    fn read_ahead_gives_what_polling_inline_gives_and_positions_only_for_what_was_taken() {
        for end in [0, 1, 6, 7, 100] {
            let mut inline = ReadAhead::inline(Box::new(Counting::new(end)), 3);
            let mut ahead =
                ReadAhead::start(Box::new(Counting::new(end)), 3, "t", None, counters())
                    .expect("reader thread");
            assert_eq!(ahead.snapshot(), 0u64.to_le_bytes());
            let (want, ended) = drain(&mut inline);
            assert_eq!(ended, Ok(()));
            let (got, ended) = drain(&mut ahead);
            assert_eq!(ended, Ok(()));
            assert_eq!(got, want, "end {end}");
            // The position after each batch is just past its last record,
            // however far the reader got meanwhile.
            let mut next = 0u64;
            for (values, position) in &got {
                assert_eq!(
                    values,
                    &(next..next + values.len() as u64).collect::<Vec<_>>()
                );
                next += values.len() as u64;
                assert_eq!(position, &next.to_le_bytes(), "end {end}");
            }
            assert_eq!(next, end);
        }
    }

    #[test]
    fn a_source_error_or_panic_arrives_after_the_batches_before_it() {
        let mut source = Counting::new(100);
        source.fail_at = Some(7);
        let mut reader =
            ReadAhead::start(Box::new(source), 3, "t", None, counters()).expect("reader");
        let (got, ended) = drain(&mut reader);
        let values: Vec<u64> = got.iter().flat_map(|(v, _)| v.clone()).collect();
        assert_eq!(values, (0..6).collect::<Vec<_>>());
        assert_eq!(ended, Err("node `counting`: broke at 7".into()));

        let mut source = Counting::new(100);
        source.fail_at = Some(4);
        source.panics = true;
        let mut reader =
            ReadAhead::start(Box::new(source), 3, "t", None, counters()).expect("reader");
        let (got, ended) = drain(&mut reader);
        assert_eq!(got.iter().map(|(v, _)| v.len()).sum::<usize>(), 3);
        let message = ended.expect_err("a panic fails the task");
        assert!(
            message.contains("internal error") && message.contains("the source broke at 4"),
            "{message}"
        );
    }

    #[test]
    fn dropping_the_reader_stops_its_thread_and_drops_the_source() {
        let (tx, dropped) = crossbeam_channel::bounded(1);
        let mut source = Counting::new(u64::MAX);
        source.dropped = Some(tx);
        let counters = counters();
        let mut reader =
            ReadAhead::start(Box::new(source), 64, "t", None, counters.clone()).expect("reader");
        let mut out = BatchBuilder::new();
        assert!(matches!(reader.poll(&mut out), Ok(Poll::More)));
        assert_eq!(out.len(), 64);
        drop(reader);
        // An endless source: only the dropped receiver stops its reader.
        dropped
            .recv_timeout(Duration::from_secs(30))
            .expect("the reader thread dropped the source");
        // Its CPU time is the task's.
        counters.set_cpu(0);
        assert!(counters.cpu_ns.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn a_source_reads_ahead_only_while_every_thread_has_a_core() {
        use crate::{polls_a_host_source, read_ahead_pays};
        use sluice_types::{Implementation, NodeSpec};
        let node = |implementation| NodeSpec {
            name: "n".into(),
            implementation,
            parallelism: None,
            config: Vec::new(),
            watermarks: None,
        };
        let source = node(Implementation::Connector("nexmark".into()));
        let sink = node(Implementation::Connector("blackhole".into()));
        let guest = node(Implementation::Guest("q0".into()));
        assert!(polls_a_host_source(&[
            source.clone(),
            guest.clone(),
            sink.clone()
        ]));
        assert!(!polls_a_host_source(&[guest.clone(), sink.clone()]));
        assert!(!polls_a_host_source(&[sink, source]));
        assert!(!polls_a_host_source(&[]));
        // One source chain on two cores: it and its reader fit.
        assert!(read_ahead_pays(1, 1, 2));
        // Two source chains on two cores, or a source chain and a keyed
        // task: they fill the cores already.
        assert!(!read_ahead_pays(2, 2, 2));
        assert!(!read_ahead_pays(2, 1, 2));
        assert!(read_ahead_pays(2, 2, 4));
    }
}
