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

/// The contract's package and the WASI versions this host provides.
const CONTRACT_VERSION: &str = "0.1.0";
const WASI_MAJOR_MINOR: &str = "0.2.";

/// Whether the sandbox provides this import (`ns:pkg/iface@version`).
pub(crate) fn is_allowed(name: &str) -> bool {
    let (iface, version) = name.split_once('@').unwrap_or((name, ""));
    ALLOWED_IMPORTS.contains(&iface)
        && if iface.starts_with("sluice:") {
            version == CONTRACT_VERSION
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
