//! `file-source` (lines of one file, split across subtasks by byte range) and
//! `file-sink` (one part file per subtask, visible only once complete).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use opendal::blocking::{Operator, StdReader, Writer};
use serde::{Deserialize, Serialize};
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

/// Part of a file a source subtask reads: the lines whose first byte lies in
/// `[pos, end)`, where `pos` is the start of the next unread line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Split {
    pos: u64,
    end: u64,
}

/// Reads the lines whose first byte lies in `[start, end)` — the same rule
/// Hadoop's text input uses, so every line is read by exactly one subtask.
/// Restored from a checkpoint, it reads the rest of every split it is given.
pub(crate) struct FileSource {
    fs: Operator,
    node: String,
    path: PathBuf,
    reader: Option<StdReader>,
    /// Offset of the next unread byte.
    pos: u64,
    end: u64,
    /// Splits still to read after the current one.
    queue: Vec<Split>,
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
            fs,
            node: name,
            path,
            reader: None,
            pos: start,
            end,
            queue: Vec::new(),
            line: Vec::new(),
        };
        if start >= end {
            return Ok(src);
        }
        // Start one byte early: if that byte is a newline, a line begins at
        // `start`; otherwise the partial line belongs to the previous split.
        let from = start.saturating_sub(1);
        src.open_at(from)?;
        if start > 0 {
            src.read_line()?;
        }
        Ok(src)
    }

    /// Continues checkpointed splits, each from the start of its next line.
    pub(crate) fn resume(
        fs: Operator,
        node: &NodeSpec,
        path: PathBuf,
        mut splits: Vec<Split>,
    ) -> Result<Self, ConnectorError> {
        splits.retain(|s| s.pos < s.end);
        splits.reverse();
        let mut src = FileSource {
            fs,
            node: node.name.clone(),
            path,
            reader: None,
            pos: 0,
            end: 0,
            queue: splits,
            line: Vec::new(),
        };
        src.next_split()?;
        Ok(src)
    }

    /// Moves to the next queued split; false when there is none.
    fn next_split(&mut self) -> Result<bool, ConnectorError> {
        self.reader = None;
        let Some(split) = self.queue.pop() else {
            return Ok(false);
        };
        self.end = split.end;
        self.open_at(split.pos)?;
        Ok(true)
    }

    fn open_at(&mut self, from: u64) -> Result<(), ConnectorError> {
        let sp = storage_path(&self.path);
        let len = self
            .fs
            .stat(&sp)
            .map_err(|e| io_error(&self.node, "read", &self.path, e))?
            .content_length();
        let reader = self
            .fs
            .reader(&sp)
            .and_then(|r| r.into_std_read(from.min(len)..len))
            .map_err(|e| io_error(&self.node, "read", &self.path, e))?;
        self.reader = Some(reader);
        self.pos = from;
        Ok(())
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
        let mut n = 0;
        while n < max {
            if self.pos >= self.end || !self.read_line()? {
                if !self.next_split()? {
                    self.pos = self.end;
                    return Ok(Poll::Finished);
                }
                continue;
            }
            out.push(None, &self.line, None);
            n += 1;
            if out.bytes() >= MAX_BATCH_BYTES {
                break;
            }
        }
        Ok(if self.pos >= self.end && self.queue.is_empty() {
            Poll::Finished
        } else {
            Poll::More
        })
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut splits: Vec<Split> = Vec::new();
        if self.pos < self.end {
            splits.push(Split {
                pos: self.pos,
                end: self.end,
            });
        }
        splits.extend(self.queue.iter().rev().copied());
        postcard::to_allocvec(&splits).expect("invariant: splits serialise")
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

/// What a checkpoint holds for one file-sink subtask: the files it
/// pre-committed and not yet published, and the number its next file gets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SinkFiles {
    subtask: u32,
    next_seq: u64,
    /// `(file number, checkpoint)` of pre-committed files.
    pending: Vec<(u64, u64)>,
}

/// A file name of subtask `s`: `part-S-N` (published), `.part-S-N.pending`
/// (pre-committed) or `.part-S-N.inprogress` (being written).
fn parse_file_name(name: &str) -> Option<(u32, u64)> {
    let core = name
        .strip_prefix('.')
        .and_then(|n| {
            n.strip_suffix(".pending")
                .or_else(|| n.strip_suffix(".inprogress"))
        })
        .unwrap_or(name);
    let rest = core.strip_prefix("part-")?;
    let (s, n) = rest.split_once('-')?;
    Some((s.parse().ok()?, n.parse().ok()?))
}

/// Writes `VALUE\n` lines in two phases. Records go to
/// `DIR/.part-S-N.inprogress`; a checkpoint barrier closes it as
/// `.part-S-N.pending` (in the checkpoint's state); the checkpoint's
/// completion renames it to `part-S-N`, which readers see. The end of the
/// input publishes the last file directly. A restore publishes what the
/// restored checkpoint pre-committed and deletes every file of the subtask
/// numbered from the checkpoint's next number on (written after it), so
/// the published output ends up as if no failure happened.
pub(crate) struct FileSink {
    fs: Operator,
    node: String,
    dir: PathBuf,
    files: SinkFiles,
    writer: Option<Writer>,
    buf: Vec<u8>,
}

impl FileSink {
    pub(crate) fn open(
        fs: Operator,
        node: &NodeSpec,
        dir: PathBuf,
        subtask: u32,
        restore: Vec<SinkFiles>,
    ) -> Result<Self, ConnectorError> {
        let mut sink = FileSink {
            fs,
            node: node.name.clone(),
            dir,
            files: SinkFiles {
                subtask,
                ..SinkFiles::default()
            },
            writer: None,
            buf: Vec::new(),
        };
        let own_restored = restore.iter().any(|st| st.subtask == subtask);
        for st in &restore {
            for &(seq, _) in &st.pending {
                sink.publish(st.subtask, seq)?;
            }
            sink.remove_from(st.subtask, st.next_seq)?;
            if st.subtask == subtask {
                sink.files.next_seq = st.next_seq;
            }
        }
        if !own_restored {
            // A fresh start: whatever an earlier run of this subtask wrote goes.
            sink.remove_from(subtask, 0)?;
        }
        Ok(sink)
    }

    fn path(&self, subtask: u32, seq: u64, stage: &str) -> PathBuf {
        match stage {
            "" => self.dir.join(format!("part-{subtask}-{seq}")),
            _ => self.dir.join(format!(".part-{subtask}-{seq}.{stage}")),
        }
    }

    /// Renames a pre-committed file to its published name; a file already
    /// published (by an earlier attempt) is fine, a lost one is an error.
    fn publish(&self, subtask: u32, seq: u64) -> Result<(), ConnectorError> {
        let pending = self.path(subtask, seq, "pending");
        let done = self.path(subtask, seq, "");
        match self
            .fs
            .rename(&storage_path(&pending), &storage_path(&done))
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => {
                match self.fs.exists(&storage_path(&done)) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(ConnectorError::Config {
                        node: self.node.clone(),
                        message: format!(
                            "pre-committed output `{}` is missing: it was deleted outside Sluice",
                            pending.display()
                        ),
                    }),
                    Err(e) => Err(io_error(&self.node, "look up", &done, e)),
                }
            }
            Err(e) => Err(io_error(&self.node, "publish", &done, e)),
        }
    }

    /// Deletes every file of `subtask` numbered `from` or higher.
    fn remove_from(&self, subtask: u32, from: u64) -> Result<(), ConnectorError> {
        let listing = format!("{}/", storage_path(&self.dir));
        let entries = match self.fs.list(&listing) {
            Ok(entries) => entries,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(&self.node, "list", &self.dir, e)),
        };
        for e in entries {
            if let Some((s, seq)) = parse_file_name(e.name())
                && s == subtask
                && seq >= from
            {
                self.fs
                    .delete(e.path())
                    .map_err(|err| io_error(&self.node, "delete", Path::new(e.path()), err))?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let tmp = self.path(self.files.subtask, self.files.next_seq, "inprogress");
        if self.writer.is_none() {
            let w = self
                .fs
                .writer(&storage_path(&tmp))
                .map_err(|e| io_error(&self.node, "create", &tmp, e))?;
            self.writer = Some(w);
        }
        let w = self.writer.as_mut().expect("invariant: just opened");
        w.write(std::mem::take(&mut self.buf))
            .map_err(|e| io_error(&self.node, "write", &tmp, e))
    }

    /// Closes the file being written, renamed to `stage`; the number moves on.
    fn close_current(&mut self, stage: &str) -> Result<Option<u64>, ConnectorError> {
        self.flush()?;
        let Some(mut w) = self.writer.take() else {
            return Ok(None);
        };
        let (s, seq) = (self.files.subtask, self.files.next_seq);
        let tmp = self.path(s, seq, "inprogress");
        w.close()
            .map_err(|e| io_error(&self.node, "close", &tmp, e))?;
        let dst = self.path(s, seq, stage);
        self.fs
            .rename(&storage_path(&tmp), &storage_path(&dst))
            .map_err(|e| io_error(&self.node, "commit", &dst, e))?;
        self.files.next_seq += 1;
        Ok(Some(seq))
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
        for (seq, _) in std::mem::take(&mut self.files.pending) {
            self.publish(self.files.subtask, seq)?;
        }
        self.close_current("")?;
        Ok(())
    }

    fn pre_commit(&mut self, checkpoint: u64) -> Result<Vec<u8>, ConnectorError> {
        if let Some(seq) = self.close_current("pending")? {
            self.files.pending.push((seq, checkpoint));
        }
        Ok(postcard::to_allocvec(&self.files).expect("invariant: state serialises"))
    }

    fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.files.pending)
            .into_iter()
            .partition(|&(_, cp)| cp <= checkpoint);
        self.files.pending = later;
        for (seq, _) in due {
            self.publish(self.files.subtask, seq)?;
        }
        Ok(())
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

    /// An async runtime (kept alive for the connectors), the connectors,
    /// and a scratch directory.
    fn fixture() -> (tokio::runtime::Runtime, Connectors, tempfile::TempDir) {
        let rt = tokio::runtime::Runtime::new().expect("tokio");
        let c = Connectors::new(rt.handle(), None).expect("connectors");
        (rt, c, tempfile::tempdir().expect("tempdir"))
    }

    fn read_all(c: &Connectors, path: &Path, p: u32, max: usize) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        for s in 0..p {
            let mut src = c
                .source(&node("file-source", path), s, p, None)
                .expect("open");
            let mut b = BatchBuilder::new();
            while src.poll(max, &mut b).expect("read") == Poll::More {}
            lines.extend(b.take().iter().map(|r| r.value.to_vec()));
        }
        lines
    }

    #[test]
    fn byte_range_splits_read_every_line_exactly_once() {
        let (_rt, c, dir) = fixture();
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
        let (_rt, c, _dir) = fixture();
        let err = c
            .source(
                &node("file-source", Path::new("/no/such/file.txt")),
                0,
                1,
                None,
            )
            .err()
            .expect("missing");
        assert!(err.to_string().contains("/no/such/file.txt"), "{err}");
    }

    #[test]
    fn an_output_directory_with_part_files_is_refused() {
        let (_rt, c, dir) = fixture();
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
        let (_rt, c, dir) = fixture();
        let out = dir.path().join("out");
        let mut sink = c.sink(&node("file-sink", &out), 3, &[]).expect("open");
        let mut b = BatchBuilder::new();
        b.push(None, b"a\t1", None);
        b.push(Some(b"k"), b"b\t2", None);
        sink.write(&b.take()).expect("write");
        assert!(!out.join("part-3-0").exists());
        sink.finish().expect("finish");
        assert_eq!(
            std::fs::read_to_string(out.join("part-3-0")).expect("committed"),
            "a\t1\nb\t2\n"
        );
        assert_eq!(std::fs::read_dir(&out).expect("dir").count(), 1);
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn batch(values: &[&str]) -> Batch {
        let mut b = BatchBuilder::new();
        for v in values {
            b.push(None, v.as_bytes(), None);
        }
        b.take()
    }

    #[test]
    fn the_sink_publishes_a_checkpoints_files_only_when_it_completes() {
        let (_rt, c, dir) = fixture();
        let out = dir.path().join("out");
        let sink_node = node("file-sink", &out);
        let mut sink = c.sink(&sink_node, 0, &[]).expect("open");
        sink.write(&batch(&["a", "b"])).expect("write");
        sink.pre_commit(1).expect("pre-commit");
        assert_eq!(names(&out), [".part-0-0.pending"]);
        // Nothing written since: checkpoint 2 adds no file.
        let state2 = sink.pre_commit(2).expect("pre-commit");
        sink.write(&batch(&["c"])).expect("write");
        sink.pre_commit(3).expect("pre-commit");
        sink.commit(2).expect("commit");
        assert_eq!(names(&out), [".part-0-1.pending", "part-0-0"]);
        sink.write(&batch(&["d"])).expect("write");
        // The process dies here. A restore from checkpoint 2 keeps what it
        // covers and drops what came after.
        drop(sink);
        let mut sink = c.sink(&sink_node, 0, &[state2]).expect("restore");
        assert_eq!(names(&out), ["part-0-0"]);
        sink.write(&batch(&["c2"])).expect("write");
        sink.finish().expect("finish");
        assert_eq!(names(&out), ["part-0-0", "part-0-1"]);
        assert_eq!(
            std::fs::read_to_string(out.join("part-0-1")).expect("read"),
            "c2\n"
        );
        // A restore from checkpoint 1 (never completed here: its file is
        // still pending there) publishes its file; a fresh start removes all.
        let dir2 = tempfile::tempdir().expect("tempdir");
        let out2 = dir2.path().join("out");
        let node2 = node("file-sink", &out2);
        let mut s2 = c.sink(&node2, 0, &[]).expect("open");
        s2.write(&batch(&["x"])).expect("write");
        let st = s2.pre_commit(1).expect("pre-commit");
        drop(s2);
        c.sink(&node2, 0, &[st]).expect("restore");
        assert_eq!(names(&out2), ["part-0-0"]);
        c.sink(&node2, 0, &[]).expect("fresh");
        assert!(names(&out2).is_empty());
    }

    #[test]
    fn a_lost_pre_committed_file_fails_the_restore_with_its_name() {
        let (_rt, c, dir) = fixture();
        let out = dir.path().join("out");
        let sink_node = node("file-sink", &out);
        let mut sink = c.sink(&sink_node, 0, &[]).expect("open");
        sink.write(&batch(&["a"])).expect("write");
        let st = sink.pre_commit(1).expect("pre-commit");
        drop(sink);
        std::fs::remove_file(out.join(".part-0-0.pending")).expect("rm");
        let err = c.sink(&sink_node, 0, &[st]).err().expect("lost file");
        assert!(err.to_string().contains(".part-0-0.pending"), "{err}");
    }

    #[test]
    fn a_file_source_resumes_from_its_snapshot_at_any_parallelism() {
        let (_rt, c, dir) = fixture();
        let path = dir.path().join("in.txt");
        let lines: Vec<String> = (0..1000).map(|i| format!("line {i}")).collect();
        std::fs::write(&path, lines.join("\n")).expect("write");
        let n = node("file-source", &path);
        let mut got = Vec::new();
        let mut states = Vec::new();
        for s in 0..2 {
            let mut src = c.source(&n, s, 2, None).expect("open");
            let mut b = BatchBuilder::new();
            src.poll(123, &mut b).expect("read");
            got.extend(b.take().iter().map(|r| r.value.to_vec()));
            states.push(src.snapshot());
        }
        for s in 0..3usize {
            let mine: Vec<Vec<u8>> = states
                .iter()
                .enumerate()
                .filter(|(old, _)| old % 3 == s)
                .map(|(_, st)| st.clone())
                .collect();
            let mut src = c.source(&n, s as u32, 3, Some(&mine)).expect("resume");
            let mut b = BatchBuilder::new();
            while src.poll(50, &mut b).expect("read") == Poll::More {}
            got.extend(b.take().iter().map(|r| r.value.to_vec()));
        }
        let mut got: Vec<String> = got
            .into_iter()
            .map(|l| String::from_utf8(l).expect("utf-8"))
            .collect();
        got.sort();
        let mut want = lines;
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn a_corrupt_source_position_is_an_error() {
        let (_rt, c, dir) = fixture();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "a\nb\n").expect("write");
        let err = c
            .source(&node("file-source", &path), 0, 1, Some(&[vec![0xff; 3]]))
            .err()
            .expect("corrupt");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
