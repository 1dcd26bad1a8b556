//! Paths of the guest components under `examples/`, built for wasm32-wasip2
//! by this crate's build script. Only tests depend on it.

include!(concat!(env!("OUT_DIR"), "/programs.rs"));

pub mod hostile;

/// Word-count inputs and checks shared by the mini-cluster and cluster tests.
pub mod wordcount {
    use std::collections::HashMap;
    use std::path::Path;

    /// Deterministic text with mixed case, punctuation, non-ASCII bytes, empty
    /// lines and very long lines.
    pub fn generate_text(bytes: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let vocabulary = [
            "the", "Quick", "BROWN", "fox", "jumps", "über", "naïve", "x42", "a", "Stream", "wasm",
            "Flink",
        ];
        let separators: [&[u8]; 8] = [
            b" ",
            b", ",
            b". ",
            b" - ",
            b"\t",
            b"!? ",
            b" \xff\xfe ",
            b"\xe2\x80\x94",
        ];
        let mut text = Vec::with_capacity(bytes + 1024);
        while text.len() < bytes {
            let r = next();
            match r % 100 {
                0..=2 => text.push(b'\n'), // empty lines
                3 => {
                    // a very long line of ~200 KB
                    for i in 0..20_000 {
                        text.extend_from_slice(vocabulary[i % vocabulary.len()].as_bytes());
                        text.push(b' ');
                    }
                    text.push(b'\n');
                }
                _ => {
                    for _ in 0..(r >> 8) % 20 {
                        let w = next();
                        let word = vocabulary[(w % vocabulary.len() as u64) as usize];
                        if w & 0x100 != 0 {
                            text.extend_from_slice(word.to_uppercase().as_bytes());
                        } else {
                            text.extend_from_slice(word.as_bytes());
                        }
                        if w & 0x200 != 0 {
                            text.extend_from_slice((w >> 40).to_string().as_bytes());
                        }
                        text.extend_from_slice(separators[((w >> 12) % 8) as usize]);
                    }
                    text.extend_from_slice(if r & 0x10000 != 0 { b"\r\n" } else { b"\n" });
                }
            }
        }
        text
    }

    /// The reference word count, written independently of the guest.
    pub fn reference_counts(text: &[u8]) -> HashMap<String, u64> {
        let mut counts = HashMap::new();
        let mut word = String::new();
        for &b in text.iter().chain(b" ") {
            if b.is_ascii_alphanumeric() {
                word.push(char::from(b.to_ascii_lowercase()));
            } else if !word.is_empty() {
                *counts.entry(std::mem::take(&mut word)).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Every line of every published part file (`part-SUBTASK-N`) under
    /// `dir`, and how many subtasks wrote them. Any other file (an
    /// unpublished `.part-*` among them) fails the test.
    pub fn output_lines(dir: &Path) -> (Vec<String>, usize) {
        let mut lines = Vec::new();
        let mut subtasks = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(dir).expect("output dir") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            assert!(
                name.starts_with("part-"),
                "unexpected file {name} in the output"
            );
            let subtask = name
                .split('-')
                .nth(1)
                .and_then(|s| s.parse::<u32>().ok())
                .expect("part-SUBTASK-N");
            subtasks.insert(subtask);
            let text = std::fs::read_to_string(&path).expect("utf-8 output");
            lines.extend(text.lines().map(str::to_owned));
        }
        (lines, subtasks.len())
    }

    /// Word counts from the part files under `dir`, and how many subtasks wrote them.
    pub fn read_output(dir: &Path) -> (HashMap<String, u64>, usize) {
        let (lines, parts) = output_lines(dir);
        let mut counts = HashMap::new();
        for line in &lines {
            let (word, count) = line.split_once('\t').expect("WORD<TAB>COUNT");
            let previous = counts.insert(word.to_owned(), count.parse::<u64>().expect("count"));
            assert!(
                previous.is_none(),
                "word {word} appears twice in the output"
            );
        }
        (counts, parts)
    }
}

/// A real S3-protocol server (moto) for tests, on a free port of 127.0.0.1.
pub mod moto {
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A running `moto_server`, killed when dropped.
    pub struct Moto {
        child: Child,
        bin: PathBuf,
        port: u16,
    }

    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Where `moto_server` is: `SLUICE_MOTO_SERVER` or the PATH. On CI a
    /// missing server fails the test; elsewhere the caller skips.
    pub fn find() -> Option<PathBuf> {
        let found = std::env::var_os("SLUICE_MOTO_SERVER")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                    .map(|d| d.join("moto_server"))
                    .find(|p| p.is_file())
            });
        if found.is_none() {
            assert!(
                std::env::var_os("CI").is_none(),
                "moto_server is not installed (set SLUICE_MOTO_SERVER or put it on the PATH; \
                 scripts/test.sh installs it)"
            );
            eprintln!("SKIPPED: moto_server is not installed; scripts/test.sh installs it");
        }
        found
    }

    impl Moto {
        /// Starts a server with `bucket` created in it (blocking; call it
        /// outside an async runtime).
        pub fn start(bin: PathBuf, bucket: &str) -> Moto {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let child = Self::spawn(&bin, port);
            let moto = Moto { child, bin, port };
            moto.create_bucket(bucket);
            moto
        }

        fn spawn(bin: &PathBuf, port: u16) -> Child {
            Command::new(bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start moto_server")
        }

        /// Its endpoint URL.
        pub fn endpoint(&self) -> String {
            format!("http://127.0.0.1:{}", self.port)
        }

        /// Creates a bucket, retrying while the server starts.
        pub fn create_bucket(&self, bucket: &str) {
            let http = reqwest::blocking::Client::new();
            let start = Instant::now();
            loop {
                match http.put(format!("{}/{bucket}", self.endpoint())).send() {
                    Ok(r) if r.status().is_success() => return,
                    _ if start.elapsed() > Duration::from_secs(60) => {
                        panic!("moto_server did not come up on {}", self.endpoint())
                    }
                    _ => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }

        /// Stops the server: every request fails until [`Moto::restart`].
        pub fn stop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }

        /// Starts the server again on the same port, with `bucket` created
        /// again (moto keeps its data in memory, so the old objects are gone).
        pub fn restart(&mut self, bucket: &str) {
            self.child = Self::spawn(&self.bin, self.port);
            self.create_bucket(bucket);
        }
    }
}
