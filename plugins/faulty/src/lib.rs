//! `split_words` as in `wordcount`, except on lines holding a trigger word:
//! `panic!` panics (a trap), `loop!` never returns (a deadline), `oom!` allocates until the
//! memory cap stops it (a memory limit). Used to test that the engine contains each of them;
//! `huge` (an output past the memory cap) and `garbage` (output that breaks the framing) too;
//! `parse_count`, `words_without_digits` and `even` fail on single records with `Result`.

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
/// length far past the end of the output): the host must refuse it, not read past it. Written
/// against ABI 1's exports by hand, so the ABI 2 build (a component) has no `garbage`.
#[cfg(all(target_family = "wasm", not(all(target_os = "wasi", target_env = "p2"))))]
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

/// `word count` lines as `(word, count)`; a line that does not parse is that one record's
/// error (a `Result`), not the partition's.
/// Records its own metrics: `bad_lines` (a counter), `line_bytes` (a histogram) and
/// `last_count` (a gauge).
#[sluice_sdk::map]
pub fn parse_count(line: &str) -> Result<(String, u64), String> {
    sluice_sdk::metrics::histogram("line_bytes").observe(line.len() as f64);
    let parsed = line.split_once(' ').ok_or_else(|| format!("expected `word count`, found {line:?}")).and_then(
        |(word, count)| {
            let count = count.trim().parse::<u64>().map_err(|err| format!("count {count:?}: {err}"))?;
            Ok((word.to_string(), count))
        },
    );
    match &parsed {
        Ok((_, count)) => sluice_sdk::metrics::gauge("last_count").set(*count as f64),
        Err(_) => sluice_sdk::metrics::counter("bad_lines").add(1),
    }
    parsed
}

/// `(word, 1)` per word of a line; a line holding a digit is that record's error.
#[sluice_sdk::flat_map]
pub fn words_without_digits(line: &str) -> Result<Vec<(&str, u64)>, String> {
    match line.find(|c: char| c.is_ascii_digit()) {
        Some(at) => Err(format!("a digit at byte {at}")),
        None => Ok(line.split_whitespace().map(|word| (word, 1)).collect()),
    }
}

/// Keeps lines holding an even number; a line that is no number is that record's error (and a
/// warning in the host's log).
#[sluice_sdk::filter]
pub fn even(line: &str) -> Result<bool, std::num::ParseIntError> {
    let number = line.trim().parse::<u64>().inspect_err(|_| {
        sluice_sdk::log(sluice_sdk::Level::Warn, &format!("not a number: {line:?}"));
    })?;
    Ok(number % 2 == 0)
}
