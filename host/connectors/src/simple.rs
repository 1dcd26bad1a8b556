//! `print` and `blackhole`.

use std::io::Write;

use sluice_types::Batch;

use crate::{ConnectorError, Sink};

/// Bytes one `print` subtask writes; past them records are counted, not
/// printed, so a job cannot flood its TaskManager's output (a file sink is
/// the connector for large outputs).
pub(crate) const PRINT_MAX_BYTES: u64 = 16 << 20;

/// Prints `SUBTASK> VALUE` lines (subtask counted from 1, as Flink does),
/// up to [`PRINT_MAX_BYTES`].
pub(crate) struct Print<W: Write = std::io::Stdout> {
    subtask: u32,
    out: W,
    written: u64,
    dropped: u64,
}

impl Print {
    /// To the process's stdout.
    pub(crate) fn stdout(subtask: u32) -> Self {
        Print::to(subtask, std::io::stdout())
    }
}

impl<W: Write> Print<W> {
    pub(crate) fn to(subtask: u32, out: W) -> Self {
        Print {
            subtask,
            out,
            written: 0,
            dropped: 0,
        }
    }
}

impl<W: Write + Send> Sink for Print<W> {
    fn write(&mut self, batch: &Batch) -> Result<(), ConnectorError> {
        let mut text = String::new();
        for r in batch.iter() {
            let line = format!(
                "{}> {}\n",
                self.subtask + 1,
                String::from_utf8_lossy(r.value)
            );
            if self.dropped > 0 || self.written + line.len() as u64 > PRINT_MAX_BYTES {
                if self.dropped == 0 {
                    text.push_str(&format!(
                        "print: subtask {} reached its cap of {} MiB; further records are counted, \
                         not printed (use a file sink for large outputs)\n",
                        self.subtask + 1,
                        PRINT_MAX_BYTES >> 20
                    ));
                }
                self.dropped += 1;
                continue;
            }
            self.written += line.len() as u64;
            text.push_str(&line);
        }
        // A closed stdout (e.g. piped into `head`) must not fail the job.
        let _ = self.out.write_all(text.as_bytes());
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ConnectorError> {
        if self.dropped > 0 {
            let _ = writeln!(
                self.out,
                "print: subtask {} did not print {} record(s) over its cap",
                self.subtask + 1,
                self.dropped
            );
        }
        let _ = self.out.flush();
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

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_types::BatchBuilder;

    #[test]
    fn print_stops_at_its_cap_and_says_how_much_it_left_out() {
        let mut out = Vec::new();
        {
            let mut print = Print::to(0, &mut out);
            let value = vec![b'x'; 1 << 20];
            for _ in 0..20 {
                let mut b = BatchBuilder::new();
                b.push(None, &value, None);
                b.push(None, b"tail", None);
                print.write(&b.take()).expect("write");
            }
            print.finish().expect("finish");
        }
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.len() as u64 <= PRINT_MAX_BYTES + 1024,
            "{}",
            text.len()
        );
        let lines: Vec<&str> = text.lines().collect();
        // 15 one-MiB lines and their `tail`s fit; then the cap, once.
        assert_eq!(lines.iter().filter(|l| l.starts_with("1> xx")).count(), 15);
        assert_eq!(lines.iter().filter(|l| **l == "1> tail").count(), 15);
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains("reached its cap of 16 MiB"))
                .count(),
            1
        );
        assert_eq!(
            lines.last().copied(),
            Some("print: subtask 1 did not print 10 record(s) over its cap")
        );
    }
}
