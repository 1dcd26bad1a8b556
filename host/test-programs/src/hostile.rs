//! Hostile components no compiler of a guest language would emit, built
//! instruction by instruction: each breaks one limit of the sandbox.

use wasm_encoder::{
    BlockType, CodeSection, Component, Function, FunctionSection, MemorySection, MemoryType,
    Module, ModuleSection, RefType, TableSection, TableType, TypeSection, ValType,
};

/// A component holding one core module built by `build`.
pub fn component_with(build: impl FnOnce(&mut Module)) -> Vec<u8> {
    let mut module = Module::new();
    build(&mut module);
    let mut component = Component::new();
    component.section(&ModuleSection(&module));
    component.finish()
}

/// One function of type `() -> ()` with `locals` and a body written by `body`.
fn one_function(module: &mut Module, locals: u32, body: impl FnOnce(&mut Function)) {
    let mut types = TypeSection::new();
    types.ty().function([], []);
    let mut functions = FunctionSection::new();
    functions.function(0);
    let mut f = Function::new([(locals, ValType::I64)]);
    body(&mut f);
    let mut code = CodeSection::new();
    code.function(&f);
    module.section(&types).section(&functions).section(&code);
}

/// A memory that starts at 4 GiB.
pub fn huge_initial_memory() -> Vec<u8> {
    component_with(|m| {
        let mut s = MemorySection::new();
        s.memory(MemoryType {
            minimum: 1 << 16,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        m.section(&s);
    })
}

/// A table that starts with ten million elements.
pub fn table_bomb() -> Vec<u8> {
    component_with(|m| {
        let mut s = TableSection::new();
        s.table(TableType {
            element_type: RefType::FUNCREF,
            table64: false,
            minimum: 10_000_000,
            maximum: None,
            shared: false,
        });
        m.section(&s);
    })
}

/// A function declaring a million locals.
pub fn many_locals() -> Vec<u8> {
    component_with(|m| {
        one_function(m, 1_000_000, |f| {
            f.instructions().end();
        })
    })
}

/// 100 001 functions (declared, without bodies).
pub fn many_functions() -> Vec<u8> {
    component_with(|m| {
        let mut types = TypeSection::new();
        types.ty().function([], []);
        let mut functions = FunctionSection::new();
        for _ in 0..100_001 {
            functions.function(0);
        }
        m.section(&types).section(&functions);
    })
}

/// A compile bomb within every declared limit: one small function of
/// `depth` nested blocks, each left by a conditional branch to a random
/// outer one. Cranelift's time grows with the square of the depth (on the
/// machine this was written on: 20 000 blocks, 200 KB, took 6 s; 40 000,
/// 400 KB, 19 s).
pub fn compile_bomb(depth: u32) -> Vec<u8> {
    component_with(|m| {
        one_function(m, 16, |f| {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let mut body = f.instructions();
            for _ in 0..depth {
                body.block(BlockType::Empty);
            }
            for open in (1..=depth).rev() {
                body.local_get((next() % 16) as u32)
                    .i32_wrap_i64()
                    .br_if((next() % u64::from(open)) as u32)
                    .end();
            }
            body.end();
        })
    })
}

/// A core module, not a component.
pub fn core_module() -> Vec<u8> {
    Module::new().finish()
}

/// A valid component that does not implement the contract.
pub fn empty_component() -> Vec<u8> {
    Component::new().finish()
}
