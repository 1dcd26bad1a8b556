//! The sandbox against real guests: contract checks, limits, and recovery
//! from misbehaving components within one process.

use sluice_policy::Policy;
use sluice_types::{BatchBuilder, Implementation, OperatorKind};
use sluice_wasm::{
    App, Cause, ChainSpec, LoadError, PlanError, Runtime, RuntimeOptions, TaskError, TaskLabel,
};

fn runtime_with(edit: impl FnOnce(&mut Policy)) -> Runtime {
    let mut policy = Policy::standard();
    // Smaller than the standard policy so a runaway loop is stopped quickly.
    policy.limits.fuel_per_call = Some(200_000_000);
    policy.limits.memory_mib = 64;
    edit(&mut policy);
    Runtime::new(policy, RuntimeOptions::default()).expect("engine")
}

fn load(rt: &Runtime, path: &str) -> Result<App, LoadError> {
    rt.load(&std::fs::read(path).expect("guest built by sluice-test-programs"))
}

fn label(what: &str) -> TaskLabel {
    TaskLabel {
        what: what.into(),
        subtask: Some((0, 1)),
        policy: "test".into(),
    }
}

fn one_op_chain(app: &App, op: &str) -> sluice_wasm::GuestChain {
    let spec = ChainSpec {
        operators: vec![(op.into(), op.into(), vec![])],
        subtask: 0,
        parallelism: 1,
        max_parallelism: 128,
        restore: vec![],
    };
    app.chain(label(op), spec).expect("chain")
}

fn one_record() -> sluice_types::Batch {
    let mut b = BatchBuilder::new();
    b.push(None, b"42", None);
    b.take()
}

fn run_bad(app: &App, op: &str) -> TaskError {
    let mut chain = one_op_chain(app, op);
    let err = chain
        .process(0, one_record())
        .expect_err("misbehaving operator must fail");
    assert!(chain.is_poisoned());
    let again = chain.process(0, one_record()).expect_err("poisoned");
    assert_eq!(again.cause, Cause::Poisoned);
    err
}

/// wordcount's split operator still works: the process is healthy.
fn assert_healthy(rt: &Runtime) {
    let app = load(rt, sluice_test_programs::WORDCOUNT).expect("wordcount loads");
    let mut chain = one_op_chain(&app, "split");
    let mut b = BatchBuilder::new();
    b.push(None, b"Hello, hello WORLD!", None);
    let out = chain.process(0, b.take()).expect("split runs");
    let keys: Vec<_> = out
        .records
        .iter()
        .map(|r| r.key.expect("keyed").to_vec())
        .collect();
    assert_eq!(
        keys,
        [b"hello".to_vec(), b"hello".to_vec(), b"world".to_vec()]
    );
}

#[test]
fn wordcount_describes_its_operators_and_plans_a_graph() {
    let rt = runtime_with(|_| {});
    let app = load(&rt, sluice_test_programs::WORDCOUNT).expect("loads");
    let ops = app.operators().expect("operators");
    let kinds: Vec<_> = ops.iter().map(|o| (o.name.as_str(), o.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("split", OperatorKind::FlatMap),
            ("count", OperatorKind::KeyedProcess)
        ]
    );
    let g = app
        .plan(&[
            ("input".into(), "/in".into()),
            ("output".into(), "/out".into()),
        ])
        .expect("plan");
    assert_eq!(g.nodes.len(), 4);
    assert_eq!(
        g.nodes[0].implementation,
        Implementation::Connector("file-source".into())
    );
    let err = app.plan(&[]).expect_err("missing arguments");
    assert!(
        matches!(&err, PlanError::InvalidArguments(m) if m.contains("input")),
        "{err}"
    );
}

#[test]
fn an_infinite_loop_runs_out_of_fuel_and_the_process_stays_healthy() {
    let rt = runtime_with(|_| {});
    let app = load(&rt, sluice_test_programs::ADVERSARIAL).expect("loads");
    let err = run_bad(&app, "spin");
    assert_eq!(err.cause, Cause::OutOfFuel { limit: 200_000_000 });
    assert!(
        err.to_string()
            .contains("operator `spin` subtask 1/1 ran out of fuel"),
        "{err}"
    );
    assert_healthy(&rt);
}

#[test]
fn an_infinite_loop_hits_the_wall_clock_deadline_when_fuel_is_off() {
    let rt = runtime_with(|p| {
        p.limits.fuel_per_call = None;
        p.limits.max_call_ms = Some(100);
    });
    let app = load(&rt, sluice_test_programs::ADVERSARIAL).expect("loads");
    let err = run_bad(&app, "spin");
    assert_eq!(err.cause, Cause::Deadline { limit_ms: 100 });
    assert!(err.to_string().contains("exceeded its time limit"), "{err}");
    assert_healthy(&rt);
}

#[test]
fn a_memory_bomb_hits_the_memory_limit_and_the_process_stays_healthy() {
    let rt = runtime_with(|_| {});
    let app = load(&rt, sluice_test_programs::ADVERSARIAL).expect("loads");
    let err = run_bad(&app, "bomb");
    assert!(
        matches!(err.cause, Cause::MemoryLimit { limit, .. } if limit == 64 << 20),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("exceeded its memory limit (64 MiB"),
        "{err}"
    );
    assert_healthy(&rt);
}

#[test]
fn a_call_out_of_fuel_after_a_refused_grow_is_reported_as_out_of_fuel() {
    let rt = runtime_with(|_| {});
    let app = load(&rt, sluice_test_programs::ADVERSARIAL).expect("loads");
    let err = run_bad(&app, "grow-then-spin");
    assert_eq!(err.cause, Cause::OutOfFuel { limit: 200_000_000 }, "{err}");
    assert_healthy(&rt);
}

#[test]
fn a_shadow_stack_overflow_is_reported_as_a_stack_overflow() {
    let rt = runtime_with(|_| {});
    let app = load(&rt, sluice_test_programs::ADVERSARIAL).expect("loads");
    let err = run_bad(&app, "deep");
    assert!(
        matches!(err.cause, Cause::ShadowStackOverflow),
        "{:?}: {err}",
        err.cause
    );
    let msg = err.to_string();
    assert!(
        msg.contains("overflowed the stack in its linear memory"),
        "{msg}"
    );
    assert!(!msg.contains("wasm trap"), "{msg}");
    assert_healthy(&rt);
}

#[test]
fn a_panic_is_reported_with_the_guests_message_and_the_process_stays_healthy() {
    let rt = runtime_with(|_| {});
    let app = load(&rt, sluice_test_programs::ADVERSARIAL).expect("loads");
    let err = run_bad(&app, "panic");
    match &err.cause {
        Cause::Panic(msg) => assert!(msg.contains("operator gave up on record \"42\""), "{msg}"),
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_healthy(&rt);
}

#[test]
fn an_endless_plan_function_runs_out_of_fuel() {
    let rt = runtime_with(|_| {});
    let app = load(&rt, sluice_test_programs::ADVERSARIAL).expect("loads");
    let err = app
        .plan(&[("mode".into(), "plan-spin".into())])
        .expect_err("never returns");
    match err {
        PlanError::Task(TaskError {
            cause: Cause::OutOfFuel { .. },
            task,
        }) => {
            assert_eq!(task.what, "the application's plan function")
        }
        other => panic!("expected out of fuel, got {other}"),
    }
    assert_healthy(&rt);
}

#[test]
fn a_component_importing_sockets_is_rejected_naming_the_import() {
    let rt = runtime_with(|_| {});
    let err = load(&rt, sluice_test_programs::FORBIDDEN_IMPORT)
        .err()
        .expect("rejected");
    match &err {
        LoadError::ForbiddenImports(names) => {
            assert!(
                names.iter().any(|n| n.starts_with("wasi:sockets/")),
                "{names:?}"
            )
        }
        other => panic!("expected a forbidden import, got {other}"),
    }
    assert!(err.to_string().contains("wasi:sockets/"), "{err}");
    assert_healthy(&rt);
}

#[test]
fn bytes_that_are_not_a_component_are_rejected_with_the_reason() {
    let rt = runtime_with(|_| {});
    let err = rt
        .load(b"PK\x03\x04 a jar, not wasm")
        .err()
        .expect("rejected");
    assert!(err.to_string().contains("magic bytes"), "{err}");
    let core_module = b"\0asm\x01\0\0\0";
    let err = rt
        .load(core_module)
        .err()
        .expect("a core module is not a component");
    assert!(
        matches!(&err, LoadError::NotAnApplication(m) if m.contains("core WebAssembly module")),
        "{err}"
    );
}

#[test]
fn the_cache_serves_a_second_load_and_survives_a_corrupt_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::new(
        Policy::standard(),
        RuntimeOptions {
            cache_dir: Some(dir.path().to_owned()),
            ..RuntimeOptions::default()
        },
    )
    .expect("engine");
    let wasm = std::fs::read(sluice_test_programs::WORDCOUNT).expect("built");
    let first = rt.load(&wasm).expect("compiles");
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(
        entries[0]
            .file_name()
            .expect("name")
            .to_string_lossy()
            .starts_with(first.digest())
    );
    let second = rt.load(&wasm).expect("from cache");
    assert_eq!(second.operators().expect("works").len(), 2);
    // Replace the file (a new inode, as the cache itself writes): the loaded
    // components still map the old one.
    std::fs::remove_file(&entries[0]).expect("remove");
    std::fs::write(&entries[0], b"garbage").expect("corrupt it");
    let third = rt.load(&wasm).expect("recompiles");
    assert_eq!(third.operators().expect("works").len(), 2);
}

/// The cached entries' file names in `dir`, sorted.
fn cached(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cwasm"))
        .collect();
    names.sort();
    names
}

#[test]
fn the_cache_stays_within_its_bound_evicting_the_least_recently_used() {
    let guests = [
        sluice_test_programs::WORDCOUNT,
        sluice_test_programs::ADVERSARIAL,
        sluice_test_programs::WINDOWED_SUM,
    ]
    .map(|p| std::fs::read(p).expect("built"));
    let runtime = |dir: &std::path::Path, max: u64| {
        Runtime::new(
            Policy::standard(),
            RuntimeOptions {
                cache_dir: Some(dir.to_owned()),
                cache_max_bytes: max,
                ..RuntimeOptions::default()
            },
        )
        .expect("engine")
    };
    // Each entry's size, from an unbounded cache.
    let sizes_dir = tempfile::tempdir().expect("tempdir");
    let unbounded = runtime(sizes_dir.path(), u64::MAX);
    let digests: Vec<String> = guests
        .iter()
        .map(|g| unbounded.load(g).expect("compiles").digest().to_owned())
        .collect();
    let size = |digest: &str| {
        std::fs::read_dir(sizes_dir.path())
            .expect("dir")
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(digest))
            .and_then(|e| e.metadata().ok())
            .expect("cached")
            .len()
    };
    let total: u64 = digests.iter().map(|d| size(d)).sum();
    // Room for all three but one byte: the third write evicts one.
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path(), total - 1);
    rt.load(&guests[0]).expect("compiles");
    rt.load(&guests[1]).expect("compiles");
    rt.load(&guests[0]).expect("a hit marks wordcount used");
    assert_eq!(cached(dir.path()).len(), 2);
    rt.load(&guests[2]).expect("compiles");
    let left = cached(dir.path());
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.iter().any(|n| n.starts_with(&digests[0]))
            && left.iter().any(|n| n.starts_with(&digests[2])),
        "the least recently used (adversarial) goes: {left:?}"
    );
    // A bound smaller than any entry keeps only the newest.
    let tiny = tempfile::tempdir().expect("tempdir");
    let rt = runtime(tiny.path(), 1);
    for g in &guests {
        rt.load(g).expect("compiles");
    }
    let left = cached(tiny.path());
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with(&digests[2]), "{left:?}");
}

#[test]
fn a_guest_source_chain_snapshots_and_restores_its_position() {
    let rt = runtime_with(|_| {});
    let app = load(&rt, sluice_test_programs::WINDOWED_SUM).expect("loads");
    let spec = |restore| ChainSpec {
        operators: vec![(
            "events".into(),
            "events".into(),
            vec![("events".into(), "10".into())],
        )],
        subtask: 0,
        parallelism: 1,
        max_parallelism: 128,
        restore,
    };
    let mut chain = app.chain(label("events"), spec(vec![])).expect("chain");
    let first = chain.poll_source(4).expect("poll");
    assert_eq!(first.output.records.len(), 4);
    assert_eq!(first.watermark, Some(30));
    let snapshot = chain.snapshot(1).expect("snapshot");
    let mut resumed = app
        .chain(label("events"), spec(snapshot))
        .expect("restored");
    let rest = resumed.poll_source(100).expect("poll");
    assert!(rest.finished);
    let values: Vec<u64> = rest
        .output
        .records
        .iter()
        .map(|r| u64::from_le_bytes(r.value.try_into().expect("u64")))
        .collect();
    assert_eq!(values, [4, 5, 6, 7, 8, 9]);
}

#[test]
fn a_chain_accounts_the_fuel_it_burns_and_the_memory_it_holds() {
    let rt = runtime_with(|_| {});
    let app = load(&rt, sluice_test_programs::WORDCOUNT).expect("wordcount loads");
    let mut chain = one_op_chain(&app, "split");
    let memory = chain.memory_bytes();
    // A component's memory is at least one 64 KiB page once instantiated.
    assert!(memory >= 65536, "memory after instantiation: {memory}");
    let mut b = BatchBuilder::new();
    b.push(None, b"Hello, hello WORLD!", None);
    chain.process(0, b.take()).expect("split runs");
    let first = chain.fuel_consumed();
    assert!(first > 0, "a call burns fuel");
    let mut b = BatchBuilder::new();
    for _ in 0..100 {
        b.push(
            None,
            b"many more words in this line than in the first",
            None,
        );
    }
    chain.process(0, b.take()).expect("split runs");
    // Fuel is reset before every call, so the total must keep growing, and a
    // bigger batch costs more than a small one.
    assert!(
        chain.fuel_consumed() > 2 * first,
        "{} vs {first}",
        chain.fuel_consumed()
    );

    let off = runtime_with(|p| p.limits.fuel_per_call = None);
    let app = load(&off, sluice_test_programs::WORDCOUNT).expect("wordcount loads");
    let mut chain = one_op_chain(&app, "split");
    chain.process(0, one_record()).expect("split runs");
    assert_eq!(chain.fuel_consumed(), 0, "no metering without a fuel limit");
}

#[test]
fn host_call_abuse_is_stopped_with_the_limit_named_and_the_process_stays_healthy() {
    let rt = runtime_with(|_| {});
    let app = load(&rt, sluice_test_programs::ADVERSARIAL).expect("loads");
    for (mode, says) in [
        (
            "metric-flood",
            "a metric name of 16777216 bytes is over the limit of 256",
        ),
        (
            "fresh-metrics",
            "more than 1000 distinct counter names in one call",
        ),
        (
            "log-flood",
            "passed more than 64 MiB to host imports in one call (the last: log",
        ),
    ] {
        let err = run_bad(&app, mode);
        match &err.cause {
            Cause::HostLimit(msg) => assert!(msg.contains(says), "{mode}: {msg}"),
            other => panic!("{mode}: expected a host-call limit, got {other:?}: {err}"),
        }
        assert!(
            err.to_string().contains(&format!(
                "operator `{mode}` subtask 1/1 broke a host-call limit"
            )),
            "{err}"
        );
    }
    assert_healthy(&rt);
}

/// A component holding one core module built by `build`.
fn component_with(build: impl FnOnce(&mut wasm_encoder::Module)) -> Vec<u8> {
    let mut module = wasm_encoder::Module::new();
    build(&mut module);
    let mut component = wasm_encoder::Component::new();
    component.section(&wasm_encoder::ModuleSection(&module));
    component.finish()
}

#[test]
fn components_declaring_too_much_are_refused_before_compiling_naming_the_limit() {
    use wasm_encoder::{
        CodeSection, Function, FunctionSection, MemorySection, MemoryType, RefType, TableSection,
        TableType, TypeSection, ValType,
    };
    let rt = runtime_with(|_| {});
    let memory = {
        let mut s = MemorySection::new();
        s.memory(MemoryType {
            minimum: 1 << 16,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        s
    };
    let table = {
        let mut s = TableSection::new();
        s.table(TableType {
            element_type: RefType::FUNCREF,
            table64: false,
            minimum: 10_000_000,
            maximum: None,
            shared: false,
        });
        s
    };
    let (types, functions, code) = {
        let mut types = TypeSection::new();
        types.ty().function([], []);
        let mut functions = FunctionSection::new();
        functions.function(0);
        let mut code = CodeSection::new();
        let mut f = Function::new([(1_000_000, ValType::I64)]);
        f.instructions().end();
        code.function(&f);
        (types, functions, code)
    };
    let many = {
        let mut s = FunctionSection::new();
        for _ in 0..100_001 {
            s.function(0);
        }
        s
    };
    for (what, wasm, says) in [
        (
            "a 4 GiB initial memory",
            component_with(|m| {
                m.section(&memory);
            }),
            "a memory starts at 4096 MiB, over the policy's `memory_mib` of 64",
        ),
        (
            "a table of 10 million elements",
            component_with(|m| {
                m.section(&table);
            }),
            "a table starts with 10000000 elements, over 1048576",
        ),
        (
            "a function with a million locals",
            component_with(|m| {
                m.section(&types).section(&functions).section(&code);
            }),
            "a function declares more than 50000 locals",
        ),
        (
            "100 001 functions",
            component_with(|m| {
                m.section(&types).section(&many);
            }),
            "it defines more than 100000 functions",
        ),
    ] {
        match rt.load(&wasm) {
            Err(LoadError::OverLimit(msg)) => assert!(msg.contains(says), "{what}: {msg}"),
            Err(other) => panic!("{what}: expected a limit, got {other}"),
            Ok(_) => panic!("{what}: loaded"),
        }
    }
    // A core module is named as such, before any compilation.
    let core = wasm_encoder::Module::new().finish();
    match rt.load(&core) {
        Err(LoadError::NotAnApplication(msg)) => {
            assert!(msg.contains("core WebAssembly module"), "{msg}")
        }
        Err(other) => panic!("expected not-an-application, got {other}"),
        Ok(_) => panic!("a core module loaded"),
    }
    assert_healthy(&rt);
}
