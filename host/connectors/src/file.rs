//! `file-source` (lines of one file, split across subtasks by byte range) and
//! `file-sink` (one part file per subtask, visible only once complete).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use opendal::blocking::{Operator, StdReader, Writer};
use sluice_types::{Batch, BatchBuilder, NodeSpec};

use crate::{ConnectorError, Poll, Sink, Source};

/// A source batch is cut at this many bytes even if fewer records were asked for.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// The sink writes to storage in chunks of this size.
const WRITE_CHUNK: usize = 1 << 20;

/// OpenDAL paths are relative to the operator's root (`/`).
fn storage_path(p: &Path) -> String {
    p.to_string_lossy().trim_start_matches('/').to_owned()
}

fn io_error(
    node: &str,
    action: &'static str,
    path: &Path,
    source: opendal::Error,
) -> ConnectorError {
    ConnectorError::Io {
        node: node.to_owned(),
        action,
        path: path.display().to_string(),
        source: Box::new(source),
    }
}

/// Reads the lines whose first byte lies in `[start, end)` — the same rule
/// Hadoop's text input uses, so every line is read by exactly one subtask.
pub(crate) struct FileSource {
    node: String,
    path: PathBuf,
    reader: Option<StdReader>,
    /// Offset of the next unread byte.
    pos: u64,
    end: u64,
    line: Vec<u8>,
}

impl FileSource {
    pub(crate) fn open(
        fs: Operator,
        node: &NodeSpec,
        path: PathBuf,
        subtask: u32,
        parallelism: u32,
    ) -> Result<Self, ConnectorError> {
        let name = node.name.clone();
        let sp = storage_path(&path);
        let len = fs
            .stat(&sp)
            .map_err(|e| io_error(&name, "read", &path, e))?
            .content_length();
        let (s, p) = (u64::from(subtask), u64::from(parallelism.max(1)));
        let (start, end) = (len * s / p, len * (s + 1) / p);
        let mut src = FileSource {
            node: name,
            path,
            reader: None,
            pos: start,
            end,
            line: Vec::new(),
        };
        if start >= end {
            return Ok(src);
        }
        // Start one byte early: if that byte is a newline, a line begins at
        // `start`; otherwise the partial line belongs to the previous split.
        let from = start.saturating_sub(1);
        let reader = fs
            .reader(&sp)
            .and_then(|r| r.into_std_read(from..len))
            .map_err(|e| io_error(&src.node, "read", &src.path, e))?;
        src.reader = Some(reader);
        src.pos = from;
        if start > 0 {
            src.read_line()?;
        }
        Ok(src)
    }

    /// Reads one line (without its `\n` / `\r\n`) into `self.line`; false at EOF.
    fn read_line(&mut self) -> Result<bool, ConnectorError> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(false);
        };
        self.line.clear();
        let n = reader
            .read_until(b'\n', &mut self.line)
            .map_err(|e| ConnectorError::Io {
                node: self.node.clone(),
                action: "read",
                path: self.path.display().to_string(),
                source: Box::new(opendal::Error::new(
                    opendal::ErrorKind::Unexpected,
                    e.to_string(),
                )),
            })?;
        self.pos += n as u64;
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
        }
        Ok(n > 0)
    }
}

impl Source for FileSource {
    fn poll(&mut self, max: usize, out: &mut BatchBuilder) -> Result<Poll, ConnectorError> {
        for _ in 0..max {
            if self.pos >= self.end || !self.read_line()? {
                self.reader = None;
                return Ok(Poll::Finished);
            }
            out.push(None, &self.line, None);
            if out.bytes() >= MAX_BATCH_BYTES {
                break;
            }
        }
        Ok(if self.pos >= self.end {
            Poll::Finished
        } else {
            Poll::More
        })
    }
}

/// Refuses an output directory that already holds part files: mixed with
/// a new run's (at another parallelism, say) they would give wrong results.
pub(crate) fn check_output_dir(
    fs: &Operator,
    node: &NodeSpec,
    dir: &Path,
) -> Result<(), ConnectorError> {
    let listing = format!("{}/", storage_path(dir));
    let entries = match fs.list(&listing) {
        Ok(entries) => entries,
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(&node.name, "list", dir, e)),
    };
    if let Some(part) = entries.iter().find(|e| e.name().starts_with("part-")) {
        return Err(ConnectorError::Config {
            node: node.name.clone(),
            message: format!(
                "output directory `{}` already holds `{}` from an earlier run; remove its part files or choose another directory",
                dir.display(),
                part.name()
            ),
        });
    }
    Ok(())
}

/// Writes `VALUE\n` lines to `DIR/.part-N.inprogress` and renames it to
/// `DIR/part-N` when the input ends, so readers never see a partial file.
pub(crate) struct FileSink {
    fs: Operator,
    node: String,
    dir: PathBuf,
    subtask: u32,
    writer: Option<Writer>,
    buf: Vec<u8>,
}

impl FileSink {
    pub(crate) fn open(
        fs: Operator,
        node: &NodeSpec,
        dir: PathBuf,
        subtask: u32,
    ) -> Result<Self, ConnectorError> {
        let mut sink = FileSink {
            fs,
            node: node.name.clone(),
            dir,
            subtask,
            writer: None,
            buf: Vec::new(),
        };
        let tmp = sink.in_progress();
        let writer = sink
            .fs
            .writer(&storage_path(&tmp))
            .map_err(|e| io_error(&sink.node, "create", &tmp, e))?;
        sink.writer = Some(writer);
        Ok(sink)
    }

    fn in_progress(&self) -> PathBuf {
        self.dir.join(format!(".part-{}.inprogress", self.subtask))
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let tmp = self.in_progress();
        let w = self.writer.as_mut().ok_or_else(|| ConnectorError::Config {
            node: self.node.clone(),
            message: "write after finish".into(),
        })?;
        w.write(std::mem::take(&mut self.buf))
            .map_err(|e| io_error(&self.node, "write", &tmp, e))
    }
}

impl Sink for FileSink {
    fn write(&mut self, batch: &Batch) -> Result<(), ConnectorError> {
        for r in batch.iter() {
            self.buf.extend_from_slice(r.value);
            self.buf.push(b'\n');
        }
        if self.buf.len() >= WRITE_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ConnectorError> {
        self.flush()?;
        let tmp = self.in_progress();
        if let Some(mut w) = self.writer.take() {
            w.close()
                .map_err(|e| io_error(&self.node, "close", &tmp, e))?;
        }
        let dst = self.dir.join(format!("part-{}", self.subtask));
        self.fs
            .rename(&storage_path(&tmp), &storage_path(&dst))
            .map_err(|e| io_error(&self.node, "commit", &dst, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Connectors;
    use sluice_types::Implementation;

    fn node(connector: &str, path: &Path) -> NodeSpec {
        NodeSpec {
            name: "n".into(),
            implementation: Implementation::Connector(connector.into()),
            parallelism: None,
            config: vec![("path".into(), path.display().to_string())],
            watermarks: None,
        }
    }

    fn read_all(c: &Connectors, path: &Path, p: u32, max: usize) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        for s in 0..p {
            let mut src = c.source(&node("file-source", path), s, p).expect("open");
            let mut b = BatchBuilder::new();
            while src.poll(max, &mut b).expect("read") == Poll::More {}
            lines.extend(b.take().iter().map(|r| r.value.to_vec()));
        }
        lines
    }

    #[test]
    fn byte_range_splits_read_every_line_exactly_once() {
        let rt = tokio::runtime::Runtime::new().expect("tokio");
        let c = Connectors::new(rt.handle(), None).expect("connectors");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("in.txt");
        let mut text = Vec::new();
        let mut expected = Vec::new();
        for i in 0..500usize {
            let line: Vec<u8> = match i % 7 {
                0 => Vec::new(),
                1 => vec![b'x'; 3000],
                2 => b"caf\xc3\xa9 \xff\xfe bytes".to_vec(),
                _ => format!("line {i}").into_bytes(),
            };
            text.extend_from_slice(&line);
            text.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
            expected.push(line);
        }
        text.extend_from_slice(b"no newline at the end");
        expected.push(b"no newline at the end".to_vec());
        std::fs::write(&path, &text).expect("write");
        for p in [1, 2, 3, 7, 64] {
            for max in [1, 100] {
                let mut got = read_all(&c, &path, p, max);
                let mut want = expected.clone();
                got.sort();
                want.sort();
                assert_eq!(got.len(), want.len(), "p={p} max={max}");
                assert!(got == want, "p={p} max={max}: lines differ");
            }
        }
    }

    #[test]
    fn a_missing_input_file_is_an_error_naming_it() {
        let rt = tokio::runtime::Runtime::new().expect("tokio");
        let c = Connectors::new(rt.handle(), None).expect("connectors");
        let err = c
            .source(&node("file-source", Path::new("/no/such/file.txt")), 0, 1)
            .err()
            .expect("missing");
        assert!(err.to_string().contains("/no/such/file.txt"), "{err}");
    }

    #[test]
    fn an_output_directory_with_part_files_is_refused() {
        let rt = tokio::runtime::Runtime::new().expect("tokio");
        let c = Connectors::new(rt.handle(), None).expect("connectors");
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = sluice_policy::Policy::standard();
        let out = dir.path().join("out");
        c.check(&node("file-sink", &out), "file-sink", &policy)
            .expect("absent is fine");
        std::fs::create_dir(&out).expect("mkdir");
        std::fs::write(out.join("notes.txt"), "x").expect("write");
        c.check(&node("file-sink", &out), "file-sink", &policy)
            .expect("no part files");
        std::fs::write(out.join("part-3"), "old\t1\n").expect("write");
        let err = c
            .check(&node("file-sink", &out), "file-sink", &policy)
            .expect_err("stale part file");
        assert!(err.to_string().contains("already holds `part-3`"), "{err}");
    }

    #[test]
    fn sink_files_appear_only_when_finished() {
        let rt = tokio::runtime::Runtime::new().expect("tokio");
        let c = Connectors::new(rt.handle(), None).expect("connectors");
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let mut sink = c.sink(&node("file-sink", &out), 3).expect("open");
        let mut b = BatchBuilder::new();
        b.push(None, b"a\t1", None);
        b.push(Some(b"k"), b"b\t2", None);
        sink.write(&b.take()).expect("write");
        assert!(!out.join("part-3").exists());
        sink.finish().expect("finish");
        assert_eq!(
            std::fs::read_to_string(out.join("part-3")).expect("committed"),
            "a\t1\nb\t2\n"
        );
        assert!(!out.join(".part-3.inprogress").exists());
    }
}
