//! `file-source` (the lines of a file, or of every file under a directory,
//! split across subtasks by byte range) and `file-sink` (part files per
//! subtask, visible only once complete).

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
/// Marks a source position in the current format (a list of [`Split`]s
/// naming their file); positions without it are the first format, which
/// knew one file only.
const SPLITS_V2: &[u8] = b"sluice-file-splits/2\n";

/// OpenDAL paths are relative to the operator's root (`/`).
pub(crate) fn storage_path(p: &Path) -> String {
    p.to_string_lossy().trim_start_matches('/').to_owned()
}

pub(crate) fn io_error(
    node: &str,
    action: &'static str,
    path: &Path,
    source: opendal::Error,
) -> ConnectorError {
    ConnectorError::Io {
        node: node.to_owned(),
        action,
        path: path.display().to_string(),
        error: Box::new(source),
    }
}

/// Whether a file under an input directory is skipped: hidden names and
/// names starting with `_` (markers such as `_SUCCESS`), as Hadoop's and
/// Flink's file inputs do.
fn is_hidden(relative: &str) -> bool {
    relative
        .split('/')
        .any(|c| c.starts_with('.') || c.starts_with('_'))
}

/// The files an input path stands for, in name order, with their sizes:
/// the file itself (named `""`), or every file under the directory.
pub(crate) fn input_files(
    fs: &Operator,
    node: &str,
    path: &Path,
) -> Result<Vec<(String, u64)>, ConnectorError> {
    let meta = fs
        .stat(&storage_path(path))
        .map_err(|e| io_error(node, "read", path, e))?;
    if !meta.is_dir() {
        return Ok(vec![(String::new(), meta.content_length())]);
    }
    let listing = format!("{}/", storage_path(path));
    let entries = fs
        .list_options(
            &listing,
            opendal::options::ListOptions {
                recursive: true,
                ..Default::default()
            },
        )
        .map_err(|e| io_error(node, "list", path, e))?;
    let mut files = Vec::new();
    for e in entries {
        let Some(relative) = e.path().strip_prefix(&listing) else {
            continue;
        };
        if relative.is_empty() || e.metadata().is_dir() || is_hidden(relative) {
            continue;
        }
        let file = path.join(relative);
        let len = fs
            .stat(e.path())
            .map_err(|err| io_error(node, "read", &file, err))?
            .content_length();
        files.push((relative.to_owned(), len));
    }
    files.sort();
    Ok(files)
}

/// Part of one input file a source subtask reads: the lines whose first
/// byte lies in `[pos, end)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Split {
    /// The file, relative to the input directory (`""`: the input is a file).
    file: String,
    pos: u64,
    end: u64,
    /// Whether `pos` starts a line. A split not yet opened may start in the
    /// middle of one, whose rest belongs to the split before.
    at_line: bool,
}

/// The first format of a source position: one file, splits at line starts.
#[derive(Deserialize)]
struct SplitV1 {
    pos: u64,
    end: u64,
}

/// Encodes a source position.
fn encode_splits(splits: &[Split]) -> Vec<u8> {
    let mut out = SPLITS_V2.to_vec();
    out.extend(postcard::to_allocvec(splits).expect("invariant: splits serialise"));
    out
}

/// Decodes a source position of either format.
pub(crate) fn decode_splits(bytes: &[u8]) -> Result<Vec<Split>, postcard::Error> {
    match bytes.strip_prefix(SPLITS_V2) {
        Some(v2) => postcard::from_bytes(v2),
        None => Ok(postcard::from_bytes::<Vec<SplitV1>>(bytes)?
            .into_iter()
            .map(|s| Split {
                file: String::new(),
                pos: s.pos,
                end: s.end,
                at_line: true,
            })
            .collect()),
    }
}

/// Reads the lines whose first byte lies in a subtask's byte range of the
/// input — the same rule Hadoop's text input uses, so every line is read by
/// exactly one subtask. A directory's files count as one input, one after
/// the other in name order (a line never spans two files). Restored from a
/// checkpoint, it reads the rest of every split it is given.
pub(crate) struct FileSource {
    fs: Operator,
    node: String,
    /// The input: a file, or the directory splits name files in.
    root: PathBuf,
    reader: Option<StdReader>,
    /// The file being read.
    path: PathBuf,
    /// Offset of the next unread byte.
    pos: u64,
    end: u64,
    file: String,
    /// Splits still to read after the current one, the next last.
    queue: Vec<Split>,
    line: Vec<u8>,
}

impl FileSource {
    pub(crate) fn open(
        fs: Operator,
        node: &NodeSpec,
        root: PathBuf,
        subtask: u32,
        parallelism: u32,
    ) -> Result<Self, ConnectorError> {
        let files = input_files(&fs, &node.name, &root)?;
        let total: u64 = files.iter().map(|(_, len)| len).sum();
        let (s, p) = (u128::from(subtask), u128::from(parallelism.max(1)));
        let share = |i: u128| (u128::from(total) * i / p) as u64;
        let (start, end) = (share(s), share(s + 1));
        let mut splits = Vec::new();
        let mut offset = 0u64;
        for (file, len) in files {
            let (from, to) = (start.max(offset), end.min(offset + len));
            if from < to {
                splits.push(Split {
                    file,
                    pos: from - offset,
                    end: to - offset,
                    at_line: from == offset,
                });
            }
            offset += len;
        }
        Self::resume(fs, node, root, splits)
    }

    /// Continues checkpointed splits.
    pub(crate) fn resume(
        fs: Operator,
        node: &NodeSpec,
        root: PathBuf,
        mut splits: Vec<Split>,
    ) -> Result<Self, ConnectorError> {
        splits.retain(|s| s.pos < s.end);
        splits.reverse();
        let mut src = FileSource {
            fs,
            node: node.name.clone(),
            path: root.clone(),
            root,
            reader: None,
            pos: 0,
            end: 0,
            file: String::new(),
            queue: splits,
            line: Vec::new(),
        };
        src.next_split()?;
        Ok(src)
    }

    /// Moves to the next queued split, at the start of its first line;
    /// false when there is none.
    fn next_split(&mut self) -> Result<bool, ConnectorError> {
        self.reader = None;
        let Some(split) = self.queue.pop() else {
            return Ok(false);
        };
        self.path = if split.file.is_empty() {
            self.root.clone()
        } else {
            self.root.join(&split.file)
        };
        self.file = split.file;
        self.end = split.end;
        if split.at_line {
            self.open_at(split.pos)?;
        } else {
            // Start one byte early: if that byte is a newline, a line begins
            // at `pos`; otherwise the partial line belongs to the split before.
            self.open_at(split.pos - 1)?;
            self.read_line()?;
        }
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
            .map_err(|e| ConnectorError::Read {
                node: self.node.clone(),
                path: self.path.display().to_string(),
                error: e,
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
                file: self.file.clone(),
                pos: self.pos,
                end: self.end,
                at_line: true,
            });
        }
        splits.extend(self.queue.iter().rev().cloned());
        encode_splits(&splits)
    }
}

/// Refuses an output path that is a file, or a directory that already
/// holds part files (mixed with a new run's, at another parallelism say,
/// they would give wrong results) unless it is `resumed`: the output of the
/// savepoint the job starts from, which the job takes over.
pub(crate) fn check_output_dir(
    fs: &Operator,
    node: &NodeSpec,
    dir: &Path,
    resumed: bool,
) -> Result<(), ConnectorError> {
    match fs.stat(&storage_path(dir)) {
        Ok(meta) if !meta.is_dir() => {
            return Err(ConnectorError::Config {
                node: node.name.clone(),
                message: format!(
                    "output `{}` is a file; the file sink writes part files into a directory",
                    dir.display()
                ),
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(&node.name, "look up", dir, e)),
    }
    if resumed {
        return Ok(());
    }
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
                "output directory `{}` already holds `{}` from an earlier run; remove its part files, \
                 choose another directory, or resume the job that wrote them with --from-savepoint",
                dir.display(),
                part.name()
            ),
        });
    }
    Ok(())
}

/// What a checkpoint holds for one file-sink subtask: where its files are,
/// the files it pre-committed and not yet published, and the number its
/// next file gets. Its files are named `STEM-N`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SinkFiles {
    subtask: u32,
    next_seq: u64,
    /// `(file number, checkpoint)` of pre-committed files.
    pending: Vec<(u64, u64)>,
    /// The output directory, absolute.
    dir: String,
    /// `part-S`, or `part-S-TAG` for a subtask that started from a
    /// checkpoint without state of its own (the job was scaled up), so its
    /// names never meet those of an earlier job's subtask `S`.
    stem: String,
}

/// The first format of the sink state: no directory (the job's own) and
/// the stem `part-S`.
#[derive(Deserialize)]
struct SinkFilesV1 {
    subtask: u32,
    next_seq: u64,
    pending: Vec<(u64, u64)>,
}

/// Decodes a checkpointed sink state of either format.
pub(crate) fn decode_sink_state(bytes: &[u8]) -> Result<SinkFiles, postcard::Error> {
    postcard::from_bytes::<SinkFiles>(bytes).or_else(|_| {
        let v1: SinkFilesV1 = postcard::from_bytes(bytes)?;
        Ok(SinkFiles {
            stem: format!("part-{}", v1.subtask),
            subtask: v1.subtask,
            next_seq: v1.next_seq,
            pending: v1.pending,
            dir: String::new(),
        })
    })
}

/// A file name's stem and number: `STEM-N` (published), `.STEM-N.pending`
/// (pre-committed) or `.STEM-N.inprogress` (being written).
fn parse_file_name(name: &str) -> Option<(&str, u64)> {
    let core = name
        .strip_prefix('.')
        .and_then(|n| {
            n.strip_suffix(".pending")
                .or_else(|| n.strip_suffix(".inprogress"))
        })
        .unwrap_or(name);
    let (stem, n) = core.rsplit_once('-')?;
    Some((stem, n.parse().ok()?))
}

/// Where a restored file sink comes from: the checkpoint's sink states
/// given to this subtask, and a tag naming the restore (the job and the
/// checkpoint) for subtasks that get no state of their own.
#[derive(Clone, Debug)]
pub struct SinkRestore {
    /// Identifies the job and the checkpoint it starts from; every attempt
    /// of the job restoring from the same checkpoint has the same tag.
    pub tag: String,
    /// The sink states, several when the parallelism changed.
    pub states: Vec<Vec<u8>>,
}

/// Writes `VALUE\n` lines in two phases. Records go to
/// `DIR/.STEM-N.inprogress`; a checkpoint barrier closes it as
/// `.STEM-N.pending` (in the checkpoint's state); the checkpoint's
/// completion renames it to `STEM-N`, which readers see. The end of the
/// input publishes the last file directly.
///
/// A restore publishes what the checkpoint pre-committed, where it was
/// written, and deletes the files of the restored subtasks numbered from
/// the checkpoint's next number on (written after it) in the job's own
/// output directory, so the published output ends up as if nothing after
/// the checkpoint had happened. In another directory (the job was resumed
/// from a savepoint into a new place) nothing is deleted: the job that took
/// the savepoint may still be writing there.
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
        restore: Option<(&str, Vec<SinkFiles>)>,
    ) -> Result<Self, ConnectorError> {
        let mut sink = FileSink {
            fs,
            node: node.name.clone(),
            files: SinkFiles {
                subtask,
                next_seq: 0,
                pending: Vec::new(),
                dir: dir.display().to_string(),
                stem: format!("part-{subtask}"),
            },
            dir,
            writer: None,
            buf: Vec::new(),
        };
        let Some((tag, states)) = restore else {
            // A fresh start: whatever an earlier attempt of this subtask wrote goes.
            sink.remove_from(&sink.dir, &sink.files.stem, 0)?;
            return Ok(sink);
        };
        let mut own = None;
        for st in states {
            let dir = if st.dir.is_empty() {
                sink.dir.clone()
            } else {
                PathBuf::from(&st.dir)
            };
            for &(seq, _) in &st.pending {
                sink.publish(&dir, &st.stem, seq)?;
            }
            if dir == sink.dir {
                sink.remove_from(&dir, &st.stem, st.next_seq)?;
            }
            if st.subtask == subtask {
                own = Some(st);
            }
        }
        match own {
            Some(st) => {
                sink.files.stem = st.stem;
                sink.files.next_seq = st.next_seq;
            }
            None => sink.files.stem = format!("part-{subtask}-{tag}"),
        }
        // What an earlier attempt restoring from the same checkpoint wrote.
        sink.remove_from(&sink.dir, &sink.files.stem, sink.files.next_seq)?;
        Ok(sink)
    }

    fn path(dir: &Path, stem: &str, seq: u64, stage: &str) -> PathBuf {
        match stage {
            "" => dir.join(format!("{stem}-{seq}")),
            _ => dir.join(format!(".{stem}-{seq}.{stage}")),
        }
    }

    fn own_path(&self, seq: u64, stage: &str) -> PathBuf {
        Self::path(&self.dir, &self.files.stem, seq, stage)
    }

    /// Renames a pre-committed file to its published name; a file already
    /// published (by an earlier attempt) is fine, a lost one is an error.
    fn publish(&self, dir: &Path, stem: &str, seq: u64) -> Result<(), ConnectorError> {
        let pending = Self::path(dir, stem, seq, "pending");
        let done = Self::path(dir, stem, seq, "");
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

    /// Deletes every file of `stem` in `dir` numbered `from` or higher.
    fn remove_from(&self, dir: &Path, stem: &str, from: u64) -> Result<(), ConnectorError> {
        let listing = format!("{}/", storage_path(dir));
        let entries = match self.fs.list(&listing) {
            Ok(entries) => entries,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(&self.node, "list", dir, e)),
        };
        for e in entries {
            if let Some((s, seq)) = parse_file_name(e.name())
                && s == stem
                && seq >= from
            {
                self.fs
                    .delete(e.path())
                    .map_err(|err| io_error(&self.node, "delete", &dir.join(e.name()), err))?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let tmp = self.own_path(self.files.next_seq, "inprogress");
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
        let seq = self.files.next_seq;
        let tmp = self.own_path(seq, "inprogress");
        w.close()
            .map_err(|e| io_error(&self.node, "close", &tmp, e))?;
        let dst = self.own_path(seq, stage);
        self.fs
            .rename(&storage_path(&tmp), &storage_path(&dst))
            .map_err(|e| io_error(&self.node, "commit", &dst, e))?;
        self.files.next_seq += 1;
        Ok(Some(seq))
    }

    fn publish_own(&self, seq: u64) -> Result<(), ConnectorError> {
        self.publish(&self.dir, &self.files.stem, seq)
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
            self.publish_own(seq)?;
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

    fn abort(&mut self, discard_precommitted: bool) -> Result<(), ConnectorError> {
        self.buf.clear();
        let mut doomed = Vec::new();
        if let Some(mut w) = self.writer.take() {
            // Nothing of it will be read: the file goes whatever the writer says.
            let _ = w.close();
            doomed.push(self.own_path(self.files.next_seq, "inprogress"));
        }
        if discard_precommitted {
            for (seq, _) in std::mem::take(&mut self.files.pending) {
                doomed.push(self.own_path(seq, "pending"));
            }
        }
        for path in doomed {
            self.fs
                .delete(&storage_path(&path))
                .map_err(|e| io_error(&self.node, "delete", &path, e))?;
        }
        Ok(())
    }

    fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.files.pending)
            .into_iter()
            .partition(|&(_, cp)| cp <= checkpoint);
        self.files.pending = later;
        for (seq, _) in due {
            self.publish_own(seq)?;
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
        c.check(&node("file-sink", &out), "file-sink", &policy, &|_| false)
            .expect("absent is fine");
        std::fs::create_dir(&out).expect("mkdir");
        std::fs::write(out.join("notes.txt"), "x").expect("write");
        c.check(&node("file-sink", &out), "file-sink", &policy, &|_| false)
            .expect("no part files");
        std::fs::write(out.join("part-3"), "old\t1\n").expect("write");
        let err = c
            .check(&node("file-sink", &out), "file-sink", &policy, &|_| false)
            .expect_err("stale part file");
        assert!(err.to_string().contains("already holds `part-3`"), "{err}");
    }

    #[test]
    fn sink_files_appear_only_when_finished() {
        let (_rt, c, dir) = fixture();
        let out = dir.path().join("out");
        let mut sink = c.sink(&node("file-sink", &out), 3, None).expect("open");
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

    /// A restore of a job `r1` from one checkpoint, with these sink states.
    fn restore(state: Vec<u8>) -> SinkRestore {
        restore_all(vec![state])
    }

    fn restore_all(states: Vec<Vec<u8>>) -> SinkRestore {
        SinkRestore {
            tag: "r1".into(),
            states,
        }
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
        let mut sink = c.sink(&sink_node, 0, None).expect("open");
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
        let mut sink = c
            .sink(&sink_node, 0, Some(&restore(state2)))
            .expect("restore");
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
        let mut s2 = c.sink(&node2, 0, None).expect("open");
        s2.write(&batch(&["x"])).expect("write");
        let st = s2.pre_commit(1).expect("pre-commit");
        drop(s2);
        c.sink(&node2, 0, Some(&restore(st))).expect("restore");
        assert_eq!(names(&out2), ["part-0-0"]);
        c.sink(&node2, 0, None).expect("fresh");
        assert!(names(&out2).is_empty());
    }

    #[test]
    fn a_lost_pre_committed_file_fails_the_restore_with_its_name() {
        let (_rt, c, dir) = fixture();
        let out = dir.path().join("out");
        let sink_node = node("file-sink", &out);
        let mut sink = c.sink(&sink_node, 0, None).expect("open");
        sink.write(&batch(&["a"])).expect("write");
        let st = sink.pre_commit(1).expect("pre-commit");
        drop(sink);
        std::fs::remove_file(out.join(".part-0-0.pending")).expect("rm");
        let err = c
            .sink(&sink_node, 0, Some(&restore(st)))
            .err()
            .expect("lost file");
        assert!(err.to_string().contains(".part-0-0.pending"), "{err}");
    }

    /// Every line `node` reads when `old_p` subtasks each read `first`
    /// lines, snapshot, and `new_p` subtasks read the rest from those
    /// snapshots (old subtask `j`'s going to new `j % new_p`); sorted.
    fn read_through_a_rescale(
        c: &Connectors,
        node: &NodeSpec,
        old_p: u32,
        new_p: u32,
        first: usize,
    ) -> Vec<String> {
        let mut got = Vec::new();
        let mut states = Vec::new();
        for s in 0..old_p {
            let mut src = c.source(node, s, old_p, None).expect("open");
            let mut b = BatchBuilder::new();
            src.poll(first, &mut b).expect("read");
            got.extend(b.take().iter().map(|r| r.value.to_vec()));
            states.push(src.snapshot());
        }
        for s in 0..new_p {
            let mine: Vec<Vec<u8>> = states
                .iter()
                .enumerate()
                .filter(|(old, _)| *old as u32 % new_p == s)
                .map(|(_, st)| st.clone())
                .collect();
            let mut src = c.source(node, s, new_p, Some(&mine)).expect("resume");
            let mut b = BatchBuilder::new();
            while src.poll(50, &mut b).expect("read") == Poll::More {}
            got.extend(b.take().iter().map(|r| r.value.to_vec()));
        }
        let mut got: Vec<String> = got
            .into_iter()
            .map(|l| String::from_utf8(l).expect("utf-8"))
            .collect();
        got.sort();
        got
    }

    #[test]
    fn a_file_source_resumes_from_its_snapshot_at_any_parallelism() {
        let (_rt, c, dir) = fixture();
        let path = dir.path().join("in.txt");
        let lines: Vec<String> = (0..1000).map(|i| format!("line {i}")).collect();
        std::fs::write(&path, lines.join("\n")).expect("write");
        let got = read_through_a_rescale(&c, &node("file-source", &path), 2, 3, 123);
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

    fn read_lines(c: &Connectors, path: &Path, p: u32) -> Vec<String> {
        read_all(c, path, p, 7)
            .into_iter()
            .map(|l| String::from_utf8(l).expect("utf-8"))
            .collect()
    }

    #[test]
    fn a_directory_input_reads_every_file_under_it_once_skipping_hidden_ones() {
        let (_rt, c, dir) = fixture();
        let input = dir.path().join("in");
        std::fs::create_dir_all(input.join("sub")).expect("mkdir");
        std::fs::create_dir_all(input.join(".hidden")).expect("mkdir");
        let mut want = Vec::new();
        for (name, n) in [("b.txt", 40), ("a.txt", 3), ("sub/c.txt", 25), ("empty", 0)] {
            let lines: Vec<String> = (0..n).map(|i| format!("{name} {i}")).collect();
            std::fs::write(input.join(name), lines.join("\n")).expect("write");
            want.extend(lines);
        }
        std::fs::write(input.join("_SUCCESS"), "skipped\n").expect("write");
        std::fs::write(input.join(".part-0-0.inprogress"), "skipped\n").expect("write");
        std::fs::write(input.join(".hidden/x"), "skipped\n").expect("write");
        want.sort();
        // One subtask reads the files in name order.
        let mut ordered = want.clone();
        ordered.sort_by_key(|l| {
            let (name, i) = l.rsplit_once(' ').expect("NAME I");
            (name.to_owned(), i.parse::<u32>().expect("i"))
        });
        assert_eq!(read_lines(&c, &input, 1), ordered);
        for p in [2, 3, 5, 64] {
            let mut got = read_lines(&c, &input, p);
            got.sort();
            assert_eq!(got, want, "p={p}");
        }
    }

    #[test]
    fn a_directory_source_resumes_from_its_snapshot_at_another_parallelism() {
        let (_rt, c, dir) = fixture();
        let input = dir.path().join("in");
        std::fs::create_dir(&input).expect("mkdir");
        let mut want = Vec::new();
        for f in 0..4 {
            let lines: Vec<String> = (0..300).map(|i| format!("f{f} line {i}")).collect();
            std::fs::write(input.join(format!("{f}.txt")), lines.join("\n")).expect("write");
            want.extend(lines);
        }
        let got = read_through_a_rescale(&c, &node("file-source", &input), 3, 2, 150);
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn a_source_position_of_the_first_format_still_resumes() {
        let (_rt, c, dir) = fixture();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "a\nb\nc\nd\n").expect("write");
        // What the first format stored: (pos, end) pairs, at "c".
        let v1 = postcard::to_allocvec(&vec![(4u64, 8u64)]).expect("encode");
        let mut src = c
            .source(&node("file-source", &path), 0, 1, Some(&[v1]))
            .expect("resume");
        let mut b = BatchBuilder::new();
        while src.poll(10, &mut b).expect("read") == Poll::More {}
        let got: Vec<Vec<u8>> = b.take().iter().map(|r| r.value.to_vec()).collect();
        assert_eq!(got, [b"c".to_vec(), b"d".to_vec()]);
    }

    #[test]
    fn inputs_that_cannot_be_read_and_outputs_that_are_files_are_refused_at_submission() {
        let (_rt, c, dir) = fixture();
        let policy = sluice_policy::Policy::standard();
        let check = |connector: &str, path: &Path| {
            c.check(&node(connector, path), connector, &policy, &|_| false)
                .map_err(|e| e.to_string())
        };
        let missing = dir.path().join("nonexistent.txt");
        let err = check("file-source", &missing).expect_err("missing");
        assert!(
            err.contains(&format!("input `{}` does not exist", missing.display())),
            "{err}"
        );
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).expect("mkdir");
        let err = check("file-source", &empty).expect_err("empty");
        assert!(err.contains("holds no files"), "{err}");
        let file = dir.path().join("file.txt");
        std::fs::write(&file, "x\n").expect("write");
        let err = check("file-sink", &file).expect_err("a file");
        assert!(err.contains("is a file"), "{err}");
        // `..` is resolved before anything is checked or opened.
        let dotted = dir.path().join("empty/../file.txt");
        assert_eq!(check("file-source", &dotted), Ok(Some(file.clone())));
    }

    #[test]
    fn normalize_resolves_dots_by_name() {
        for (path, want) in [
            ("/tmp/../etc/x", "/etc/x"),
            ("/../../a", "/a"),
            ("/a/./b/", "/a/b"),
            ("a/../../b", "../b"),
        ] {
            assert_eq!(crate::normalize(Path::new(path)), Path::new(want), "{path}");
        }
    }

    #[test]
    fn a_savepoint_restored_into_another_directory_publishes_its_files_where_they_were_written() {
        let (_rt, c, dir) = fixture();
        let (old, new) = (dir.path().join("old"), dir.path().join("new"));
        let mut sink = c.sink(&node("file-sink", &old), 0, None).expect("open");
        sink.write(&batch(&["a"])).expect("write");
        sink.pre_commit(1).expect("pre-commit");
        sink.commit(1).expect("commit");
        sink.write(&batch(&["b"])).expect("write");
        // The savepoint: `b` is pre-committed; the job is cancelled before
        // it hears that the savepoint completed, and goes on no more.
        let savepoint = sink.pre_commit(2).expect("pre-commit");
        sink.write(&batch(&["c"])).expect("write");
        drop(sink);
        let mut resumed = c
            .sink(&node("file-sink", &new), 0, Some(&restore(savepoint)))
            .expect("resume elsewhere");
        // `b` belongs to the savepoint's output; the old directory is left
        // as it is otherwise (its job may still be running).
        assert_eq!(names(&old), ["part-0-0", "part-0-1"]);
        resumed.write(&batch(&["d"])).expect("write");
        resumed.finish().expect("finish");
        assert_eq!(names(&new), ["part-0-2"]);
    }

    #[test]
    fn a_savepoint_restored_into_its_own_directory_drops_what_came_after_it() {
        let (_rt, c, dir) = fixture();
        let out = dir.path().join("out");
        let n = node("file-sink", &out);
        let mut sink = c.sink(&n, 0, None).expect("open");
        sink.write(&batch(&["a"])).expect("write");
        let savepoint = sink.pre_commit(1).expect("pre-commit");
        sink.commit(1).expect("commit");
        // The job runs on after the savepoint and publishes more.
        sink.write(&batch(&["b"])).expect("write");
        sink.pre_commit(2).expect("pre-commit");
        sink.commit(2).expect("commit");
        drop(sink);
        assert_eq!(names(&out), ["part-0-0", "part-0-1"]);
        let mut resumed = c.sink(&n, 0, Some(&restore(savepoint))).expect("resume");
        assert_eq!(names(&out), ["part-0-0"]);
        resumed.write(&batch(&["b"])).expect("write");
        resumed.finish().expect("finish");
        assert_eq!(names(&out), ["part-0-0", "part-0-1"]);
    }

    #[test]
    fn a_scaled_up_subtask_without_state_keeps_an_earlier_jobs_files() {
        let (_rt, c, dir) = fixture();
        let out = dir.path().join("out");
        let n = node("file-sink", &out);
        // An earlier job at a higher parallelism left subtask 1's output.
        let mut early = c.sink(&n, 1, None).expect("open");
        early.write(&batch(&["early"])).expect("write");
        early.finish().expect("finish");
        // Restored from a checkpoint that holds no state for subtask 1.
        let mut s1 = c.sink(&n, 1, Some(&restore_all(vec![]))).expect("open");
        s1.write(&batch(&["x"])).expect("write");
        s1.finish().expect("finish");
        assert_eq!(names(&out), ["part-1-0", "part-1-r1-0"]);
        // Another attempt restoring from the same checkpoint replaces its
        // own earlier output only.
        let mut again = c.sink(&n, 1, Some(&restore_all(vec![]))).expect("open");
        assert_eq!(names(&out), ["part-1-0"]);
        again.write(&batch(&["x"])).expect("write");
        let state = again.pre_commit(3).expect("pre-commit");
        drop(again);
        // Its checkpoints carry the new names on.
        c.sink(&n, 1, Some(&restore(state))).expect("restore");
        assert_eq!(names(&out), ["part-1-0", "part-1-r1-0"]);
    }

    #[test]
    fn a_sink_state_of_the_first_format_still_restores() {
        let (_rt, c, dir) = fixture();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).expect("mkdir");
        std::fs::write(out.join(".part-0-0.pending"), "a\n").expect("write");
        std::fs::write(out.join("part-0-1"), "after\n").expect("write");
        // subtask 0, next number 1, file 0 pre-committed at checkpoint 4.
        let v1 = postcard::to_allocvec(&(0u32, 1u64, vec![(0u64, 4u64)])).expect("encode");
        c.sink(&node("file-sink", &out), 0, Some(&restore(v1)))
            .expect("restore");
        assert_eq!(names(&out), ["part-0-0"]);
    }
}
