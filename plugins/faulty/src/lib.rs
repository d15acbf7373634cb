//! `split_words` as in `wordcount`, except on lines holding a trigger word:
//! `panic!` panics (a trap), `loop!` never returns (a deadline), `oom!` allocates until the
//! memory cap stops it (a memory limit). Used to test that the engine contains each of them;
//! `huge` (an output past the memory cap) and `garbage` (output that breaks the framing) too.

/// One `(word, 1)` per word, or misbehaviour on a trigger.
#[sluice_sdk::flat_map]
pub fn split_words(line: &str) -> Vec<(&str, u64)> {
    if line.contains("panic!") {
        panic!("asked to panic by line {line:?}");
    }
    if line.contains("loop!") {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
    if line.contains("oom!") {
        let mut hog: Vec<Vec<u8>> = Vec::new();
        loop {
            hog.push(vec![1; 16 << 20]);
            std::hint::black_box(&hog);
        }
    }
    line.split_whitespace().map(|word| (word, 1)).collect()
}

/// Adds two counts.
#[sluice_sdk::reduce]
pub fn sum(a: u64, b: u64) -> u64 {
    a + b
}

/// Each line as is, except that a line holding `huge!` becomes 256 records of 1 MiB each: an
/// output larger than a stage's `memory_limit` lets the guest build.
#[sluice_sdk::flat_map]
pub fn huge(line: &str) -> Vec<String> {
    if line.contains("huge!") {
        return (0..256).map(|_| "h".repeat(1 << 20)).collect();
    }
    vec![line.to_string()]
}

/// `garbage`: described as a `&str -> String` map, but its output breaks the framing (a frame
/// length far past the end of the output): the host must refuse it, not read past it.
#[cfg(target_family = "wasm")]
mod garbage {
    use sluice_sdk::__private as sdk;

    fn info() -> sluice_sdk::abi::FunctionInfo {
        sdk::describe_map("garbage", &|line: &str| line.to_string())
    }

    fn call(_input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        out.extend_from_slice(&[0xff, 0xff, 0xff, 0x0f, b'x']);
        Ok(())
    }

    #[unsafe(export_name = "sluice_describe_garbage")]
    extern "C" fn describe() -> u64 {
        sdk::export_describe(info)
    }

    #[unsafe(export_name = "sluice_call_garbage")]
    extern "C" fn call_export(len: u32) -> u64 {
        sdk::export_call(len, call)
    }
}

/// Each line as is, slowly: about 20 µs of work per line, a plugin slower than its input.
#[sluice_sdk::map]
pub fn slow(line: &str) -> String {
    let mut x: u64 = line.len() as u64;
    for _ in 0..20_000 {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    std::hint::black_box(x);
    line.to_string()
}
