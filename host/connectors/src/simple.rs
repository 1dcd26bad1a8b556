//! `print` and `blackhole`.

use std::io::Write;

use sluice_types::Batch;

use crate::{ConnectorError, Sink};

/// Prints `SUBTASK> VALUE` lines (subtask counted from 1, as Flink does).
pub(crate) struct Print {
    pub subtask: u32,
}

impl Sink for Print {
    fn write(&mut self, batch: &Batch) -> Result<(), ConnectorError> {
        let mut out = std::io::stdout().lock();
        for r in batch.iter() {
            // A closed stdout (e.g. piped into `head`) must not fail the job.
            let _ = writeln!(
                out,
                "{}> {}",
                self.subtask + 1,
                String::from_utf8_lossy(r.value)
            );
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ConnectorError> {
        let _ = std::io::stdout().flush();
        Ok(())
    }
}

/// Discards everything.
pub(crate) struct Blackhole;

impl Sink for Blackhole {
    fn write(&mut self, _batch: &Batch) -> Result<(), ConnectorError> {
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}
