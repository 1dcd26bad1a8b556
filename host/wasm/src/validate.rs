//! What a component may import.

use crate::error::LoadError;

/// Interfaces a component may import, by name without version. Everything
/// else — sockets, HTTP, anything unknown — is rejected at load time.
/// Filesystem types are allowed because Rust's std links them, but no
/// directory is ever preopened, so there is nothing to open.
pub const ALLOWED_IMPORTS: &[&str] = &[
    "sluice:app/types",
    "sluice:app/plan",
    "sluice:app/log",
    "sluice:app/metrics",
    "sluice:app/clock",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
];

/// The WASI versions this host provides (the contract's: `contract::VERSIONS`).
const WASI_MAJOR_MINOR: &str = "0.2.";

/// Whether the sandbox provides this import (`ns:pkg/iface@version`).
pub(crate) fn is_allowed(name: &str) -> bool {
    let (iface, version) = name.split_once('@').unwrap_or((name, ""));
    ALLOWED_IMPORTS.contains(&iface)
        && if iface.starts_with("sluice:") {
            crate::contract::VERSIONS.contains(&version)
        } else {
            version.starts_with(WASI_MAJOR_MINOR)
        }
}

/// Checks every import name.
pub(crate) fn check_imports<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), LoadError> {
    let forbidden: Vec<String> = names
        .filter(|n| !is_allowed(n))
        .map(str::to_owned)
        .collect();
    if forbidden.is_empty() {
        Ok(())
    } else {
        Err(LoadError::ForbiddenImports(forbidden))
    }
}

/// Functions one component's core modules may define together.
pub const MAX_FUNCTIONS: u64 = 100_000;

/// Locals one function may declare.
pub const MAX_LOCALS: u64 = 50_000;

/// Bytes of one function's body.
pub const MAX_FUNCTION_BYTES: usize = 8 << 20;

/// Checks what a component declares before anything compiles it (a
/// crafted component can make a compiler take minutes or gigabytes):
/// its imports, the number of functions, the locals and size of each,
/// and the initial sizes of memories and tables, against the sandbox's
/// limits. One pass over the bytes, no compilation. Bytes that do not
/// parse pass here: the compiler's validation (linear, before any code
/// generation) refuses them with its own, established message.
pub(crate) fn precheck(wasm: &[u8], memory_limit: u64) -> Result<(), LoadError> {
    match scan(wasm, memory_limit) {
        Err(Scan::Refused(e)) => Err(e),
        Err(Scan::Malformed) | Ok(()) => Ok(()),
    }
}

enum Scan {
    Refused(LoadError),
    Malformed,
}

impl From<LoadError> for Scan {
    fn from(e: LoadError) -> Self {
        Scan::Refused(e)
    }
}

fn scan(wasm: &[u8], memory_limit: u64) -> Result<(), Scan> {
    use wasmparser::{Encoding, Parser, Payload};
    let invalid = |_: wasmparser::BinaryReaderError| Scan::Malformed;
    let over = |what: String| Scan::Refused(LoadError::OverLimit(what));
    let mut depth = 0usize;
    let mut imports = Vec::new();
    let mut functions = 0u64;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding == Encoding::Module {
                    return Err(LoadError::NotAnApplication(
                        "it is a core WebAssembly module, not a component".into(),
                    )
                    .into());
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            // The outer component's imports are what the host must provide.
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let name = import.map_err(invalid)?.name;
                    imports.push(match name.version_suffix {
                        Some(v) => format!("{}{v}", name.name),
                        None => name.name.to_owned(),
                    });
                }
            }
            Payload::FunctionSection(reader) => {
                functions += u64::from(reader.count());
                if functions > MAX_FUNCTIONS {
                    return Err(over(format!(
                        "it defines more than {MAX_FUNCTIONS} functions"
                    )));
                }
            }
            Payload::CodeSectionEntry(body) => {
                if body.range().len() > MAX_FUNCTION_BYTES {
                    return Err(over(format!(
                        "a function body of {} bytes is over {MAX_FUNCTION_BYTES}",
                        body.range().len()
                    )));
                }
                let mut locals = 0u64;
                for entry in body.get_locals_reader().map_err(invalid)? {
                    locals += u64::from(entry.map_err(invalid)?.0);
                    if locals > MAX_LOCALS {
                        return Err(over(format!(
                            "a function declares more than {MAX_LOCALS} locals"
                        )));
                    }
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(invalid)?;
                    let page = 1u64 << memory.page_size_log2.unwrap_or(16);
                    let bytes = memory.initial.saturating_mul(page);
                    if bytes > memory_limit {
                        return Err(over(format!(
                            "a memory starts at {} MiB, over the policy's `memory_mib` of {}",
                            bytes >> 20,
                            memory_limit >> 20
                        )));
                    }
                }
            }
            Payload::TableSection(reader) => {
                for table in reader {
                    let initial = table.map_err(invalid)?.ty.initial;
                    if initial > crate::host::MAX_TABLE_ELEMENTS as u64 {
                        return Err(over(format!(
                            "a table starts with {initial} elements, over {}",
                            crate::host::MAX_TABLE_ELEMENTS
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(check_imports(imports.iter().map(String::as_str))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_and_unknown_versions_are_named() {
        let err = check_imports(
            [
                "wasi:io/streams@0.2.6",
                "wasi:sockets/tcp@0.2.6",
                "sluice:app/log@9.0.0",
                "sluice:app/log@0.1.0",
                "sluice:app/log@0.2.0",
            ]
            .into_iter(),
        )
        .expect_err("sockets are forbidden");
        match err {
            LoadError::ForbiddenImports(names) => {
                assert_eq!(names, ["wasi:sockets/tcp@0.2.6", "sluice:app/log@9.0.0"])
            }
            other => panic!("unexpected {other}"),
        }
    }
}
