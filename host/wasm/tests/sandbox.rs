//! The sandbox against real guests: contract checks, limits, and recovery
//! from misbehaving components within one process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use sluice_policy::Policy;
use sluice_share::{Account, Caps};
use sluice_types::{BatchBuilder, Implementation, OperatorKind};
use sluice_wasm::{
    App, CallControl, Cause, ChainSpec, LoadError, PlanError, Runtime, RuntimeOptions, TaskError,
    TaskLabel,
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
    chain_with(app, op, &CallControl::default()).expect("chain")
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
    assert!(chain.is_poisoned(), "{err}");
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
fn a_new_instance_never_sees_what_an_earlier_one_left_in_its_memory() {
    let rt = runtime_with(|_| {});
    let app = load(&rt, sluice_test_programs::ADVERSARIAL).expect("loads");
    // What `snoop` found where it leaves `value`.
    let snoop = |chain: &mut sluice_wasm::GuestChain, value: &[u8]| {
        let mut b = BatchBuilder::new();
        b.push(None, value, None);
        let out = chain.process(0, b.take()).expect("snoop runs");
        out.records
            .iter()
            .next()
            .expect("one record")
            .value
            .to_vec()
    };
    // Instance after instance takes the pool slot the last one freed, its
    // memory reset in place: none may find the last one's secret.
    for round in 0..50u32 {
        let secret = format!("tenant secret #{round:04} ")
            .repeat(16)
            .into_bytes();
        let mut chain = one_op_chain(&app, "snoop");
        let found = snoop(&mut chain, &secret);
        assert_eq!(found.len(), secret.len());
        assert!(
            found.iter().all(|&b| b == 0),
            "round {round}: a fresh instance found {:?}",
            String::from_utf8_lossy(&found)
        );
        // Within one instance the memory keeps what was left: the check
        // above could see a leak.
        let again = snoop(&mut chain, b"next");
        assert_eq!(again, secret[..4]);
    }
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

#[test]
fn loading_reports_what_compiling_cost() {
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
    let (first, cost) = rt.load_metered(&wasm);
    first.expect("compiles");
    assert!(cost.compiled, "{cost:?}");
    assert!(!cost.cpu.is_zero(), "compiling took CPU: {cost:?}");
    // From the cache: nothing compiled, nothing to bill.
    let (second, cost) = rt.load_metered(&wasm);
    second.expect("from cache");
    assert_eq!(cost, sluice_wasm::CompileCost::default());
    // Refused before compiling: nothing compiled either.
    let (junk, cost) = rt.load_metered(b"this is not wasm");
    assert!(junk.is_err(), "junk loaded");
    assert!(!cost.compiled, "{cost:?}");
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
    let mut chain = app
        .chain(label("events"), spec(vec![]), &CallControl::default())
        .expect("chain");
    let first = chain.poll_source(4).expect("poll");
    assert_eq!(first.output.records.len(), 4);
    assert_eq!(first.watermark, Some(30));
    let snapshot = chain.snapshot(1).expect("snapshot");
    let mut resumed = app
        .chain(label("events"), spec(snapshot), &CallControl::default())
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
    assert!(
        chain.fuel_consumed() > 0,
        "calls are metered without a fuel limit too (for billing and metrics)"
    );
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

#[test]
fn components_declaring_too_much_are_refused_before_compiling_naming_the_limit() {
    use sluice_test_programs::hostile;
    let rt = runtime_with(|_| {});
    for (what, wasm, says) in [
        (
            "a 4 GiB initial memory",
            hostile::huge_initial_memory(),
            "a memory starts at 4096 MiB, over the policy's `memory_mib` of 64",
        ),
        (
            "a table of 10 million elements",
            hostile::table_bomb(),
            "a table starts with 10000000 elements, over 1048576",
        ),
        (
            "a function with a million locals",
            hostile::many_locals(),
            "a function declares more than 50000 locals",
        ),
        (
            "100 001 functions",
            hostile::many_functions(),
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
    match rt.load(&hostile::core_module()) {
        Err(LoadError::NotAnApplication(msg)) => {
            assert!(msg.contains("core WebAssembly module"), "{msg}")
        }
        Err(other) => panic!("expected not-an-application, got {other}"),
        Ok(_) => panic!("a core module loaded"),
    }
    assert_healthy(&rt);
}

fn chain_with(
    app: &App,
    op: &str,
    control: &CallControl,
) -> Result<sluice_wasm::GuestChain, TaskError> {
    let spec = ChainSpec {
        operators: vec![(op.into(), op.into(), vec![])],
        subtask: 0,
        parallelism: 1,
        max_parallelism: 128,
        restore: vec![],
    };
    app.chain(label(op), spec, control)
}

/// A control whose cancel check, once armed, reports the task cancelled
/// from its `after + 1`-th look on; and the arming flag and the count.
fn cancelled_after_checks(after: u32) -> (CallControl, Arc<AtomicBool>, Arc<AtomicU32>) {
    let armed = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicU32::new(0));
    let (a, c) = (armed.clone(), checks.clone());
    let control = CallControl {
        accounts: Vec::new(),
        cancelled: Some(Arc::new(move || {
            a.load(Ordering::SeqCst) && c.fetch_add(1, Ordering::SeqCst) >= after
        })),
    };
    (control, armed, checks)
}

#[test]
fn cancelling_stops_a_running_call_even_when_only_fuel_would() {
    // Fuel enough for hours, no deadline: only the cancel can stop it.
    let rt = runtime_with(|p| {
        p.limits.fuel_per_call = Some(u64::MAX / 2);
        p.limits.max_call_ms = None;
    });
    let app = load(&rt, sluice_test_programs::ADVERSARIAL).expect("loads");
    // Cancelled from the third check on, once the call has started.
    let (control, armed, checks) = cancelled_after_checks(2);
    let mut chain = chain_with(&app, "spin", &control).expect("chain");
    armed.store(true, Ordering::SeqCst);
    let err = chain.process(0, one_record()).expect_err("cancelled");
    assert_eq!(err.cause, Cause::Cancelled, "{err}");
    assert!(
        checks.load(Ordering::SeqCst) >= 3,
        "the running call looked at the cancel flag"
    );
    assert!(
        err.to_string().contains("was cancelled during a call"),
        "{err}"
    );
    assert_healthy(&rt);
}

/// Runs `f` on its own thread and returns what it returns; a failure if it
/// has not returned after two minutes (a guest asleep for its hour).
fn within_minutes<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    rx.recv_timeout(std::time::Duration::from_secs(120))
        .expect("the sleeping call was not stopped")
}

#[test]
fn a_guest_asleep_in_wasi_is_stopped_at_its_deadline() {
    let rt = runtime_with(|p| p.limits.max_call_ms = Some(200));
    let app = load(&rt, sluice_test_programs::ADVERSARIAL).expect("loads");
    let mut chain = one_op_chain(&app, "sleep");
    let err = within_minutes(move || {
        chain
            .process(0, one_record())
            .expect_err("asleep for an hour")
    });
    assert_eq!(err.cause, Cause::Deadline { limit_ms: 200 }, "{err}");
    assert_healthy(&rt);
}

#[test]
fn cancelling_stops_a_guest_asleep_in_wasi() {
    // No deadline: only the cancel can end the hour's sleep.
    let rt = runtime_with(|p| p.limits.max_call_ms = None);
    let app = load(&rt, sluice_test_programs::ADVERSARIAL).expect("loads");
    // Cancelled from the fifth check on: the call is asleep by then.
    let (control, armed, checks) = cancelled_after_checks(4);
    let mut chain = chain_with(&app, "sleep", &control).expect("chain");
    armed.store(true, Ordering::SeqCst);
    let err = within_minutes(move || chain.process(0, one_record()).expect_err("cancelled"));
    assert_eq!(err.cause, Cause::Cancelled, "{err}");
    assert!(
        checks.load(Ordering::SeqCst) >= 5,
        "the sleeping call looked at the cancel flag"
    );
    assert_healthy(&rt);
}

#[test]
fn instances_and_guest_memory_are_capped_per_account() {
    let rt = runtime_with(|_| {});
    let wordcount = load(&rt, sluice_test_programs::WORDCOUNT).expect("loads");
    let tenant = Account::new(
        "tenant `acme`",
        Caps {
            instances: Some((1, "`max_instances_per_taskmanager` of policy `p`".into())),
            memory_bytes: None,
        },
    );
    let control = CallControl {
        accounts: vec![tenant.clone()],
        cancelled: None,
    };
    let first = chain_with(&wordcount, "split", &control).expect("first instance");
    let refused = chain_with(&wordcount, "split", &control)
        .err()
        .expect("over the cap");
    assert!(matches!(refused.cause, Cause::Cap(_)), "{refused}");
    assert!(
        refused.to_string().contains(
            "tenant `acme` reached `max_instances_per_taskmanager` of policy `p`: 1 instances"
        ),
        "{refused}"
    );
    // Another tenant's account is not touched by acme's.
    let other = CallControl {
        accounts: vec![Account::new("tenant `beta`", Caps::default())],
        cancelled: None,
    };
    chain_with(&wordcount, "split", &other).expect("another tenant's instance");
    drop(first);
    let again = chain_with(&wordcount, "split", &control).expect("room after the first ended");
    assert!(tenant.memory_bytes() >= 65536, "its memory is counted");
    drop(again);
    assert_eq!((tenant.instances(), tenant.memory_bytes()), (0, 0));

    // Memory: the tenant's cap (8 MiB) is below the policy's (64 MiB).
    let adversarial = load(&rt, sluice_test_programs::ADVERSARIAL).expect("loads");
    let tenant = Account::new(
        "tenant `acme`",
        Caps {
            instances: None,
            memory_bytes: Some((
                8 << 20,
                "`max_memory_mib_per_taskmanager` of policy `p`".into(),
            )),
        },
    );
    let control = CallControl {
        accounts: vec![tenant.clone()],
        cancelled: None,
    };
    let mut bomb = chain_with(&adversarial, "bomb", &control).expect("chain");
    let err = bomb
        .process(0, one_record())
        .expect_err("over the tenant's memory");
    assert!(matches!(err.cause, Cause::Cap(_)), "{err}");
    assert!(
        err.to_string()
            .contains("`max_memory_mib_per_taskmanager` of policy `p`: 8388608 bytes"),
        "{err}"
    );
    drop(bomb);
    assert_eq!(tenant.memory_bytes(), 0, "given back with the instance");
    assert_healthy(&rt);
}

#[test]
fn a_huge_batch_in_one_call_is_stopped_by_the_output_limit() {
    // Memory enough for the batch: the output limit stops it, not memory.
    let rt = runtime_with(|p| {
        p.limits.memory_mib = 512;
        p.limits.fuel_per_call = Some(2_000_000_000);
    });
    let app = load(&rt, sluice_test_programs::ADVERSARIAL).expect("loads");
    let err = run_bad(&app, "flood-output");
    assert_eq!(
        err.cause,
        Cause::OutputLimit {
            limit: 64 << 20,
            emitted: 70_000 * (1024 + sluice_policy::RECORD_OVERHEAD),
            records: 70_000,
        }
    );
    assert!(
        err.to_string()
            .contains("raise `max_output_bytes_per_call`"),
        "{err}"
    );
    assert_healthy(&rt);
}
