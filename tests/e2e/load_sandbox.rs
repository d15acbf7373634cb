//! The load-time sandbox: a zoo of hand-written hostile modules, each refused through all three
//! paths — start-up and `sluice check`, a file swap, `sluice deploy` — with a message naming the
//! plugin, the export and the class, quickly (the 1 s `validate_timeout`, not the 10 s call
//! deadline); after each, the admin API answers and a good version still swaps in. A newer
//! version supersedes one still waiting, and one plugin's slow refusal never holds another's swap.

use std::time::{Duration, Instant};

use crate::admin::{free_port, get};
use crate::support::*;

/// A hostile module: what it does, its bytes, and what the refusal must name.
struct Hostile {
    name: &'static str,
    bytes: Vec<u8>,
    class: &'static str,
    export: &'static str,
}

/// A module that satisfies the ABI's shape (memory, `sluice_abi_version`, `sluice_input`, a
/// `split_words` function), with `body` spliced in to misbehave.
fn module(abi_version: &str, describe: &str, extra: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
             {extra}
             (memory (export "memory") 1)
             (func (export "sluice_abi_version") (result i32) {abi_version})
             (func (export "sluice_input") (param i32) (result i32) i32.const 1024)
             (func $describe (export "sluice_describe_split_words") (result i64) {describe})
             (func (export "sluice_call_split_words") (param i32) (result i64) i64.const 0)
             (data (i32.const 64) "\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff"))"#
    ))
    .unwrap()
}

fn zoo() -> Vec<Hostile> {
    let ok = "i32.const 1";
    let forever = "(loop $l (br $l)) unreachable";
    let mut many = String::from("(module (memory (export \"memory\") 1) (func $f)");
    for i in 0..100_000 {
        many += &format!(" (export \"e{i}\" (func $f))");
    }
    many += ")";
    // 100 MB: a valid module followed by one big custom section.
    let mut huge = module(ok, "i64.const 0", "");
    let payload = 100 << 20;
    huge.push(0); // custom section
    let name = b"padding";
    let mut size = payload + 1 + name.len();
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        huge.push(if size == 0 { byte } else { byte | 0x80 });
        if size == 0 {
            break;
        }
    }
    huge.push(name.len() as u8);
    huge.extend_from_slice(name);
    huge.resize(huge.len() + payload, 0);
    vec![
        Hostile {
            name: "abi_version never returns",
            bytes: module(forever, "i64.const 0", ""),
            class: "deadline",
            export: "sluice_abi_version",
        },
        Hostile {
            name: "start function never ends",
            bytes: module(ok, "i64.const 0", &format!("(func $start {forever}) (start $start)")),
            class: "deadline",
            export: "the start function",
        },
        Hostile {
            name: "describe out of bounds",
            // Pointer 0x7fff0000, 4096 bytes: far past the one page of memory.
            bytes: module(ok, "i64.const 0x7fff000000001000", ""),
            class: "bad_output",
            export: "sluice_describe_split_words",
        },
        Hostile {
            name: "describe garbage",
            // 12 bytes of 0xff at 64: no FunctionInfo decodes from them.
            bytes: module(ok, "i64.const 0x000000400000000c", ""),
            class: "bad_output",
            export: "sluice_describe_split_words",
        },
        Hostile {
            name: "describe recursing",
            bytes: module(ok, "call $describe", ""),
            class: "trap",
            export: "sluice_describe_split_words",
        },
        Hostile {
            name: "3.7 GiB of initial memory",
            bytes: wat::parse_str(
                r#"(module (memory (export "memory") 60620)
                     (func (export "sluice_abi_version") (result i32) i32.const 1)
                     (func (export "sluice_input") (param i32) (result i32) i32.const 0)
                     (func (export "sluice_describe_split_words") (result i64) i64.const 0)
                     (func (export "sluice_call_split_words") (param i32) (result i64) i64.const 0))"#,
            )
            .unwrap(),
            class: "memory_limit",
            export: "memory",
        },
        Hostile {
            name: "a WASI import",
            bytes: module(
                ok,
                "i64.const 0",
                r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
            ),
            class: "bad_abi",
            export: "import `wasi_snapshot_preview1.fd_write`",
        },
        Hostile {
            name: "no sluice_abi_version",
            bytes: wat::parse_str(
                r#"(module (memory (export "memory") 1)
                     (func (export "sluice_input") (param i32) (result i32) i32.const 0)
                     (func (export "sluice_describe_split_words") (result i64) i64.const 0)
                     (func (export "sluice_call_split_words") (param i32) (result i64) i64.const 0))"#,
            )
            .unwrap(),
            class: "bad_abi",
            export: "sluice_abi_version",
        },
        Hostile {
            name: "a mistyped sluice_abi_version",
            bytes: wat::parse_str(
                r#"(module (memory (export "memory") 1)
                     (func (export "sluice_abi_version") (param i32) (result i32) i32.const 1)
                     (func (export "sluice_input") (param i32) (result i32) i32.const 0)
                     (func (export "sluice_describe_split_words") (result i64) i64.const 0)
                     (func (export "sluice_call_split_words") (param i32) (result i64) i64.const 0))"#,
            )
            .unwrap(),
            class: "bad_abi",
            export: "sluice_abi_version",
        },
        Hostile { name: "100 000 exports", bytes: wat::parse_str(&many).unwrap(), class: "too_large", export: "" },
        Hostile { name: "a 100 MB module", bytes: huge, class: "too_large", export: "" },
    ]
}

/// Asserts that `message` refuses the plugin `wc` naming `hostile`'s export and class.
fn assert_names(message: &str, hostile: &Hostile) {
    assert!(message.contains("plugin `wc`"), "{}: the plugin is named: {message}", hostile.name);
    assert!(
        message.contains(&format!(": {}: ", hostile.class)),
        "{}: class {}: {message}",
        hostile.name,
        hostile.class
    );
    // `export` names an export, or the other part at fault as the message puts it.
    let part =
        if hostile.export.contains(' ') { hostile.export.to_string() } else { format!("export `{}`", hostile.export) };
    if !hostile.export.is_empty() {
        assert!(message.contains(&part), "{}: {part}: {message}", hostile.name);
    }
}

fn pipeline(address: &str) -> String {
    format!(
        "[pipeline]\nname = \"zoo\"\nbatch_interval = \"200ms\"\nblock_interval = \"100ms\"\n\
         [plugins]\nwc = \"wc.wasm\"\nother = \"other.wasm\"\n\
         [[sources]]\nname = \"lines\"\ntype = \"socket\"\naddress = \"{address}\"\n\
         [[stages]]\nname = \"words\"\ninput = \"lines\"\nop = \"flat_map\"\nplugin = \"wc\"\nfunction = \"split_words\"\n\
         [[stages]]\nname = \"more\"\ninput = \"lines\"\nop = \"flat_map\"\nplugin = \"other\"\nfunction = \"split_words\"\n\
         [[sinks]]\nname = \"out\"\ninput = \"words\"\ntype = \"file\"\npath = \"out\"\n\
         [[sinks]]\nname = \"more_out\"\ninput = \"more\"\ntype = \"file\"\npath = \"more_out\"\n"
    )
}

/// Replaces `name` in `work` atomically (write aside, rename), as a deploy script would.
fn replace(work: &Workdir, name: &str, bytes: &[u8]) {
    let tmp = work.path(&format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(tmp, work.path(name)).unwrap();
}

#[test]
fn check_and_start_up_refuse_every_hostile_module_by_plugin_export_and_class() {
    let work = Workdir::new();
    work.add_plugin("wordcount", "other");
    work.write("pipeline.toml", &pipeline("127.0.0.1:9"));
    for hostile in zoo() {
        std::fs::write(work.path("wc.wasm"), &hostile.bytes).unwrap();
        for command in ["check", "run"] {
            let started = Instant::now();
            let args: &[&str] =
                if command == "check" { &["check", "pipeline.toml"] } else { &["run", "pipeline.toml", "--no-ui"] };
            let out = work.sluice(args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{} ({command}): {stderr}", hostile.name);
            assert!(stderr.contains("plugins.wc: "), "{} ({command}): {stderr}", hostile.name);
            assert_names(&stderr, &hostile);
            assert!(!stderr.contains("panicked"), "{stderr}");
            // The per-call deadline is 10 s; loading has its own 1 s budget.
            assert!(
                started.elapsed() < Duration::from_secs(6),
                "{} ({command}) took {:?}",
                hostile.name,
                started.elapsed()
            );
        }
    }
}

#[test]
fn file_swaps_and_deploys_refuse_every_hostile_module_quickly_while_the_admin_api_answers() {
    let server = LineServer::start(Feed::HoldOpen(join_lines(&["to be or not".to_string()])));
    let work = Workdir::new();
    work.add_plugin("wordcount", "wc");
    work.add_plugin("wordcount", "other");
    work.write("pipeline.toml", &pipeline(&server.address));
    let ui = format!("127.0.0.1:{}", free_port());
    let running = work.spawn(&["pipeline.toml", "--ui", &ui]);
    running.wait_for("records out", Duration::from_secs(30));
    let mut rejections = 0;
    for hostile in zoo() {
        // The file path.
        let started = Instant::now();
        replace(&work, "wc.wasm", &hostile.bytes);
        rejections += 1;
        let deadline = Instant::now() + Duration::from_secs(6);
        loop {
            let found = running.log().lines().filter(|l| l.contains("rejected new plugin version")).count();
            if found >= rejections {
                break;
            }
            assert!(Instant::now() < deadline, "{}: no rejection of the file; log:\n{}", hostile.name, running.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = running.log();
        let line = log.lines().filter(|l| l.contains("rejected new plugin version")).nth(rejections - 1).unwrap();
        assert_names(line, &hostile);
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{}: file refusal took {:?}",
            hostile.name,
            started.elapsed()
        );
        // The deploy path, with the admin API answering while the plugin's lane works.
        let path = work.path("hostile.wasm");
        std::fs::write(&path, &hostile.bytes).unwrap();
        let started = Instant::now();
        let (out, status) = std::thread::scope(|s| {
            let deploy = s.spawn(|| work.sluice(&["deploy", "wc", path.to_str().unwrap(), "--ui", &ui]));
            std::thread::sleep(Duration::from_millis(100));
            let asked = Instant::now();
            let status = get(&ui, "/api/status", None);
            assert!(asked.elapsed() < Duration::from_millis(500), "status took {:?}", asked.elapsed());
            (deploy.join().unwrap(), status)
        });
        rejections += 1;
        assert_eq!(status.0, 200, "{}: the admin API answers during a deploy", hostile.name);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", hostile.name);
        if hostile.bytes.len() > 32 << 20 {
            // Past the upload limit: the CLI refuses it before sending (the engine would too).
            assert!(stderr.contains("refused before upload"), "{}: {stderr}", hostile.name);
            rejections -= 1;
        } else {
            assert!(stderr.contains(": 422: rejected: "), "{}: {stderr}", hostile.name);
        }
        assert_names(&stderr, &hostile);
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{}: deploy refusal took {:?}",
            hostile.name,
            started.elapsed()
        );
    }
    // Still serving the first version; a good one swaps in through each path.
    let out = work.sluice(&["deploy", "wc", plugin("uppercase").to_str().unwrap(), "--ui", &ui]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    running.wait_for("plugin swapped", Duration::from_secs(10));
    replace(&work, "wc.wasm", &std::fs::read(plugin("faulty")).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.log().matches("plugin swapped").count() < 2 {
        assert!(Instant::now() < deadline, "the good file did not swap in; log:\n{}", running.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{log}");
}

#[test]
fn a_newer_version_supersedes_a_waiting_one_and_a_slow_refusal_holds_no_other_plugin() {
    let server = LineServer::start(Feed::HoldOpen(join_lines(&["to be or not".to_string()])));
    let work = Workdir::new();
    work.add_plugin("wordcount", "wc");
    work.add_plugin("wordcount", "other");
    work.write("pipeline.toml", &pipeline(&server.address));
    let ui = format!("127.0.0.1:{}", free_port());
    let running = work.spawn(&["pipeline.toml", "--ui", &ui]);
    running.wait_for("records out", Duration::from_secs(30));
    let slow = work.path("slow.wasm");
    std::fs::write(&slow, module("i32.const 1", "i64.const 0", "(func $s (loop $l (br $l))) (start $s)")).unwrap();
    let deploy = |file: std::path::PathBuf| {
        let work = &work;
        let ui = ui.clone();
        move || work.sluice(&["deploy", "wc", file.to_str().unwrap(), "--ui", &ui])
    };
    std::thread::scope(|s| {
        // `wc`'s lane is busy for its 1 s budget with the slow module...
        let first = s.spawn(deploy(slow.clone()));
        std::thread::sleep(Duration::from_millis(200));
        // ...while two good versions queue behind it: the second supersedes the first.
        let superseded = s.spawn(deploy(plugin("faulty")));
        std::thread::sleep(Duration::from_millis(200));
        let newest = s.spawn(deploy(plugin("uppercase")));
        // Meanwhile another plugin's file swap goes through at once.
        let started = Instant::now();
        replace(&work, "other.wasm", &std::fs::read(plugin("uppercase")).unwrap());
        running.wait_for("plugin swapped", Duration::from_secs(5));
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "`other` waited for `wc`'s lane: {:?}; log:\n{}",
            started.elapsed(),
            running.log()
        );
        let out = first.join().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(": 422: rejected: ") && stderr.contains(": deadline: "), "{stderr}");
        let out = superseded.join().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(": 409: superseded"), "{stderr}");
        let out = newest.join().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    });
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{log}");
    // Installed: `other`'s file and the newest deploy of `wc`; the superseded one never was.
    // (Counted in the whole log after exit: a deploy's answer can reach us before its log line.)
    let installed: Vec<&str> = log.lines().filter(|l| l.contains("new plugin version validated")).collect();
    assert_eq!(installed.len(), 2, "{installed:#?}");
    assert_eq!(installed.iter().filter(|l| l.contains("plugin=wc ")).count(), 1, "{installed:#?}");
}

/// A compiled plugin in the cache changed after the engine wrote it (a planted artifact: wasmtime
/// would run its machine code as found) is not loaded: its MAC fails, the plugin is compiled
/// again and the file replaced. The key is its owner's only, outside the cache.
#[test]
fn a_tampered_compile_cache_file_is_refused_and_the_plugin_compiled_again() {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &wordcount_pipeline("127.0.0.1:9", "wordcount.wasm", "300ms", "100ms"));
    let check = || {
        let out = work.sluice(&["check", "pipeline.toml"]);
        let said = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{said}");
        said
    };
    let refused = "fails its MAC check (changed since this engine wrote it): not loaded; compiled again";
    assert!(!check().contains(refused));
    let cached: Vec<std::path::PathBuf> = std::fs::read_dir(work.path("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let sealed = std::fs::read(&cached[0]).unwrap();
    // The artifact with one byte of its code changed, and the same with a tag made up for it.
    let mut planted = sealed.clone();
    let middle = planted.len() / 2;
    planted[middle] ^= 0xff;
    for file in [planted.clone(), [&[0u8; 32][..], &planted[32..]].concat()] {
        std::fs::write(&cached[0], &file).unwrap();
        let said = check();
        assert!(said.contains(refused), "{said}");
        assert_ne!(std::fs::read(&cached[0]).unwrap(), file, "replaced by a sealed compile");
        assert!(!check().contains(refused), "the replacement loads");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(work.path("cache.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
