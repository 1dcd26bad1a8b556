//! Compiling a component is untrusted work too: a crafted component can
//! keep Cranelift busy for minutes or make it allocate gigabytes. On a
//! cluster it is compiled in a child process (the `sluice` binary run as
//! `compile-worker`) that limits itself — address space, CPU time, one
//! thread, low priority — and that the parent kills at a wall-clock
//! deadline. The artifact comes back through the compiled-component cache.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::LoadError;

/// How a process compiles a component it has not compiled before.
#[derive(Clone, Debug, Default)]
pub enum Compiler {
    /// On the calling thread, unbounded (a local run of one's own code).
    #[default]
    InProcess,
    /// In a bounded child process (needs the cache: the artifact comes
    /// back through it).
    Child(ChildCompiler),
}

/// The child that compiles: `program args... --input F --output F
/// --memory-mib M --cpu-seconds S`, which must end in [`compile_worker`].
#[derive(Clone, Debug)]
pub struct ChildCompiler {
    /// The program (the `sluice` binary).
    pub program: PathBuf,
    /// Arguments before the request's (the subcommand).
    pub args: Vec<OsString>,
    /// CPU time a compilation may take (the child's `RLIMIT_CPU`). The
    /// child is also killed once it has run [`ChildCompiler::wall_limit`]
    /// in wall-clock time (blocked, or starved on a busy machine: it runs
    /// at low priority, so a wall-clock bound as tight as the CPU bound
    /// would refuse ordinary components whenever the machine is loaded).
    pub timeout: Duration,
    /// Address space the child may use, MiB.
    pub memory_mib: u64,
}

/// Bytes of the child's error output kept for the error message.
const MAX_STDERR: u64 = 16 << 10;

/// Exit code of a worker whose compilation failed on the component.
const EXIT_INVALID: i32 = 2;

impl ChildCompiler {
    /// How long the child may run in wall-clock time: four times its CPU
    /// time, and at least ten seconds more.
    pub fn wall_limit(&self) -> Duration {
        (self.timeout * 4).max(self.timeout + Duration::from_secs(10))
    }

    /// Compiles `wasm` (its content digest `digest`) into `output`.
    /// Adds the CPU time the compilation took to `cpu` (the time the
    /// child ran, when it was stopped before it could say).
    pub(crate) fn compile(
        &self,
        wasm: &[u8],
        digest: &str,
        output: &Path,
        cpu: &mut Duration,
    ) -> Result<(), LoadError> {
        let dir = output.parent().unwrap_or(Path::new("."));
        let input = dir.join(format!(
            ".{digest}.{}.{:?}.input",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&input, wasm)
            .map_err(|e| LoadError::Compiler(format!("cannot write {}: {e}", input.display())))?;
        let result = self.run(&input, output, cpu);
        let _ = std::fs::remove_file(&input);
        result
    }

    fn run(&self, input: &Path, output: &Path, cpu: &mut Duration) -> Result<(), LoadError> {
        let started = Instant::now();
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .arg("--input")
            .arg(input)
            .arg("--output")
            .arg(output)
            .arg("--memory-mib")
            .arg(self.memory_mib.to_string())
            .arg("--cpu-seconds")
            .arg(self.timeout.as_secs().max(1).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                LoadError::Compiler(format!(
                    "cannot start the compiler process {}: {e}",
                    self.program.display()
                ))
            })?;
        let pid = rustix::process::Pid::from_child(&child);
        let mut stderr = child.stderr.take();
        let mut stdout = child.stdout.take();
        let (done, finished) = std::sync::mpsc::channel();
        let waiter = std::thread::Builder::new()
            .name("sluice-compile-wait".into())
            .spawn(move || {
                let mut text = String::new();
                if let Some(err) = stderr.as_mut() {
                    let _ = err.take(MAX_STDERR).read_to_string(&mut text);
                    // Whatever is left must not block the child.
                    let _ = std::io::copy(err, &mut std::io::sink());
                }
                let mut report = String::new();
                if let Some(out) = stdout.as_mut() {
                    let _ = out.take(MAX_STDERR).read_to_string(&mut report);
                    let _ = std::io::copy(out, &mut std::io::sink());
                }
                let _ = done.send((child.wait(), text, report));
            })
            .map_err(|e| {
                LoadError::Compiler(format!("cannot wait for the compiler process: {e}"))
            })?;
        let (status, stderr, report, timed_out) = match finished.recv_timeout(self.wall_limit()) {
            Ok((status, text, report)) => (status, text, report, false),
            Err(_) => {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                let (status, text, report) = finished.recv().map_err(|_| {
                    LoadError::Compiler("the compiler process's waiter stopped".into())
                })?;
                (status, text, report, true)
            }
        };
        let _ = waiter.join();
        // One thread: its CPU time is at most the time it ran.
        *cpu += reported_cpu(&report).unwrap_or_else(|| started.elapsed());
        // What a killed compiler was writing.
        let _ = std::fs::remove_file(partial_path(output, pid.as_raw_nonzero().get() as u32));
        let status = status.map_err(|e| {
            LoadError::Compiler(format!("cannot wait for the compiler process: {e}"))
        })?;
        if timed_out {
            return Err(LoadError::OverLimit(format!(
                "compiling it ran longer than {} s in wall-clock time (the bound that goes with the compile time limit of {} s of CPU); it was stopped",
                self.wall_limit().as_secs_f64(),
                self.timeout.as_secs().max(1)
            )));
        }
        if status.success() {
            return Ok(());
        }
        let message = stderr.trim();
        if status.code() == Some(EXIT_INVALID) {
            return Err(LoadError::Invalid(message.to_owned()));
        }
        use std::os::unix::process::ExitStatusExt;
        let signal = status.signal();
        // SIGXCPU: over its CPU time; an abort after a failed allocation:
        // over its memory.
        if signal == Some(rustix::process::Signal::XCPU.as_raw()) {
            return Err(LoadError::OverLimit(format!(
                "compiling it used more than {} s of CPU (the compile time limit); it was stopped",
                self.timeout.as_secs().max(1)
            )));
        }
        if message.contains("memory allocation") || message.contains("out of memory") {
            return Err(LoadError::OverLimit(format!(
                "compiling it needed more than {} MiB (the compile memory limit); it was stopped",
                self.memory_mib
            )));
        }
        Err(LoadError::Compiler(format!(
            "the compiler process ended with {status}{}",
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            }
        )))
    }
}

/// The line with which the compiler process reports its CPU time.
const CPU_REPORT: &str = "cpu-ns ";

/// The CPU time in a compiler process's report.
fn reported_cpu(report: &str) -> Option<Duration> {
    report
        .lines()
        .find_map(|l| l.strip_prefix(CPU_REPORT))
        .and_then(|n| n.trim().parse().ok())
        .map(Duration::from_nanos)
}

/// The calling process's CPU time so far.
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// The calling thread's CPU time so far (a compilation in-process).
pub(crate) fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Where the compiler process `pid` writes before renaming to `output`.
fn partial_path(output: &Path, pid: u32) -> PathBuf {
    output.with_extension(format!("partial-{pid}"))
}

/// The compiler process's side: limits itself, compiles `input` with the
/// engine settings every Sluice process uses, and writes the artifact to
/// `output`. Returns the exit code (0, or [`EXIT_INVALID`] with the reason
/// on stderr when the component does not compile), after reporting the CPU
/// time it took on stdout.
pub fn compile_worker(input: &Path, output: &Path, memory_mib: u64, cpu_seconds: u64) -> i32 {
    let code = compile_limited(input, output, memory_mib, cpu_seconds);
    println!("{CPU_REPORT}{}", process_cpu().as_nanos());
    code
}

fn compile_limited(input: &Path, output: &Path, memory_mib: u64, cpu_seconds: u64) -> i32 {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let bytes = memory_mib.saturating_mul(1 << 20);
    // The CPU limit's hard bound is a second above the soft one, so that
    // the kernel sends SIGXCPU (which names the cause) before SIGKILL.
    let cpu = cpu_seconds.max(1);
    let limits = [
        (Resource::As, bytes, bytes),
        (Resource::Cpu, cpu, cpu + 1),
        (Resource::Core, 0, 0),
    ];
    for (resource, soft, hard) in limits {
        if let Err(e) = setrlimit(
            resource,
            Rlimit {
                current: Some(soft),
                maximum: Some(hard),
            },
        ) {
            eprintln!("cannot limit the compiler process ({resource:?}): {e}");
            return 1;
        }
    }
    // Behind the tenants' tasks; failing to lower it is no reason to stop.
    let _ = rustix::process::setpriority_process(None, 10);
    let wasm = match std::fs::read(input) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("cannot read {}: {e}", input.display());
            return 1;
        }
    };
    // The stack size is a runtime setting, not part of the artifact.
    let mut config = crate::engine_config(1024);
    config.parallel_compilation(false);
    let engine = match wasmtime::Engine::new(&config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot configure the wasm engine: {e:#}");
            return 1;
        }
    };
    let component = match wasmtime::component::Component::new(&engine, &wasm) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e:#}");
            return EXIT_INVALID;
        }
    };
    let written = component
        .serialize()
        .map_err(|e| format!("{e:#}"))
        .and_then(|artifact| {
            // Two compilers of the same component (two uploads, two
            // deployments) write their own files; the renames are atomic.
            let tmp = partial_path(output, std::process::id());
            std::fs::write(&tmp, artifact)
                .and_then(|()| std::fs::rename(&tmp, output))
                .map_err(|e| format!("cannot write {}: {e}", output.display()))
        });
    match written {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}
