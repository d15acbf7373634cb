//! The crate's shape: its rooms (the modules `lib.rs` declares, one folder or file each under
//! `engine/src/`) use each other in one direction only, as `docs/ARCHITECTURE.md` says.
//!
//! A room uses another when its code names it: `crate::<room>` (also inside `use crate::{..}`
//! groups), a name `lib.rs` re-exports from it (`crate::Pipeline`), or a `super::` chain that
//! climbs to the crate root first. Comments, doc comments and string literals do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// For each room, the rooms it uses, each with the first file that does.
type Uses = BTreeMap<String, BTreeMap<String, PathBuf>>;

#[test]
fn rooms_depend_on_each_other_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let uses = room_uses(&src);
    assert!(uses.len() >= 10, "expected the rooms lib.rs declares, found {:?}", uses.keys());
    assert!(uses["topology"].contains_key("sources"), "the check no longer sees `use crate::...`: {uses:?}");
    if let Some(cycle) = find_cycle(&uses) {
        panic!("rooms form a cycle: {}; a type both need belongs in the lower room", describe(&cycle, &uses));
    }
}

#[test]
fn the_room_check_sees_paths_groups_and_super_and_names_a_cycle() {
    let rooms: BTreeSet<String> = ["a", "b", "c", "d", "e"].map(String::from).into();
    let exported = BTreeMap::from([("Thing".to_string(), "e".to_string())]);
    let code = r#"
        // crate::c in a comment, /* crate::c */ in a block comment
        use crate::{a::X, b};
        const S: &str = "crate::c";
        fn f<'a>(x: &'a str) -> char { let _ = crate::Thing; 'c' }
        mod tests {
            use super::super::d::Y;
        }
    "#;
    let found = references(code, 1, &rooms, &exported);
    assert_eq!(found, BTreeSet::from(["a", "b", "d", "e"].map(String::from)));
    // One level down, `super::` stays in the room.
    assert!(references("use super::a::X;", 2, &rooms, &exported).is_empty());

    let edge = |from: &str, to: &str| (from.to_string(), BTreeMap::from([(to.to_string(), PathBuf::from(from))]));
    let acyclic: Uses = [edge("a", "b"), edge("b", "c")].into();
    assert_eq!(find_cycle(&acyclic), None);
    let cyclic: Uses = [edge("a", "b"), edge("b", "c"), edge("c", "a")].into();
    assert_eq!(describe(&find_cycle(&cyclic).unwrap(), &cyclic), "a → b (a) → c (b) → a (c)");
}

/// Every room of the crate under `src` and the rooms it uses.
fn room_uses(src: &Path) -> Uses {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let (rooms, exported) = declared_rooms(&lib);
    let mut uses = Uses::new();
    for room in &rooms {
        let mut files = Vec::new();
        let folder = src.join(room);
        if folder.is_dir() {
            rust_files(&folder, 1, &mut files);
        } else {
            files.push((src.join(format!("{room}.rs")), 1));
        }
        let used = uses.entry(room.clone()).or_default();
        for (file, depth) in files {
            let code = std::fs::read_to_string(&file).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
            for other in references(&code, depth, &rooms, &exported) {
                if other != *room {
                    used.entry(other).or_insert_with(|| file.strip_prefix(src).unwrap_or(&file).to_path_buf());
                }
            }
        }
    }
    uses
}

/// The rooms `lib.rs` declares (`mod x;`, not test-only), and what it re-exports from which.
fn declared_rooms(lib: &str) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let mut rooms = BTreeSet::new();
    let mut exported = BTreeMap::new();
    let mut test_only = false;
    for line in lib.lines().map(str::trim) {
        let item = line.trim_start_matches("pub(crate) ").trim_start_matches("pub ");
        if let Some(name) = item.strip_prefix("mod ").and_then(|rest| rest.strip_suffix(';'))
            && !test_only
        {
            rooms.insert(name.trim().to_string());
        }
        if let Some(path) = line.strip_prefix("pub use ").and_then(|rest| rest.strip_suffix(';'))
            && let Some((room, rest)) = path.split_once("::")
        {
            let names = rest.rsplit("::").next().unwrap_or(rest).trim_matches(['{', '}']);
            for name in names.split(',') {
                let name = name.rsplit(" as ").next().unwrap_or(name).trim();
                exported.insert(name.to_string(), room.to_string());
            }
        }
        test_only = line.starts_with("#[cfg(test)]");
    }
    (rooms, exported)
}

/// The `.rs` files under `dir`, each with its module depth below the crate root.
fn rust_files(dir: &Path, depth: usize, out: &mut Vec<(PathBuf, usize)>) {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).expect("a room's folder").map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, depth + 1, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let is_mod = path.file_name().is_some_and(|n| n == "mod.rs");
            out.push((path, if is_mod { depth } else { depth + 1 }));
        }
    }
}

/// The rooms `code` (a file `depth` modules below the crate root) names.
fn references(
    code: &str,
    depth: usize,
    rooms: &BTreeSet<String>,
    exported: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let tokens = tokens(code);
    let mut found = BTreeSet::new();
    let mut add = |name: &str| {
        if rooms.contains(name) {
            found.insert(name.to_string());
        } else if let Some(room) = exported.get(name) {
            found.insert(room.clone());
        }
    };
    // Each open brace: whether it opens an inline `mod`.
    let mut braces: Vec<bool> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i].as_str();
        match token {
            "{" => braces.push(i >= 2 && tokens[i - 2] == "mod"),
            "}" => {
                braces.pop();
            }
            "crate" | "super" if tokens.get(i + 1).is_some_and(|t| t == "::") => {
                // The first segment after the crate root, if this path climbs to it.
                let mut at = i;
                if token == "super" {
                    let here = depth + braces.iter().filter(|m| **m).count();
                    let mut climbs = 0;
                    while tokens.get(at).is_some_and(|t| t == "super") && tokens.get(at + 1).is_some_and(|t| t == "::")
                    {
                        climbs += 1;
                        at += 2;
                    }
                    if climbs < here || (i > 0 && tokens[i - 1] == "::") {
                        i = at;
                        continue;
                    }
                } else {
                    at += 2;
                }
                match tokens.get(at).map(String::as_str) {
                    Some("{") => {
                        // A group: the first segment of each of its items.
                        let mut level = 0;
                        for (j, t) in tokens.iter().enumerate().skip(at) {
                            match t.as_str() {
                                "{" => level += 1,
                                "}" if level == 1 => break,
                                "}" => level -= 1,
                                name if level == 1 && (tokens[j - 1] == "{" || tokens[j - 1] == ",") => add(name),
                                _ => {}
                            }
                        }
                    }
                    Some(name) => add(name),
                    None => {}
                }
                i = at;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// Identifiers, `::` and single punctuation of `code`, without comments, strings and chars.
fn tokens(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut level = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    level += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    level -= 1;
                    i += 2;
                    if level == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '\'' && (at(i + 1) == '\\' || at(i + 2) == '\'') {
            // A char literal (else a lifetime, whose name is read as an identifier).
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            // A raw string: `r"..."`, `r#"..."#`, `br#"..."#`.
            let hashes = chars[i..].iter().take_while(|&&h| h == '#').count();
            if (word == "r" || word == "br") && at(i + hashes) == '"' {
                i += hashes + 1;
                let closes = |j: usize| chars[j] == '"' && (1..=hashes).all(|h| at(j + h) == '#');
                while i < chars.len() && !closes(i) {
                    i += 1;
                }
                i += 1 + hashes;
            } else {
                tokens.push(word);
            }
        } else if c == ':' && at(i + 1) == ':' {
            tokens.push("::".to_string());
            i += 2;
        } else {
            if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
            i += 1;
        }
    }
    tokens
}

/// A cycle of rooms (the first room again at the end), if there is one.
fn find_cycle(uses: &Uses) -> Option<Vec<String>> {
    fn visit(room: &str, uses: &Uses, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|r| r == room) {
            let mut cycle = path[start..].to_vec();
            cycle.push(room.to_string());
            return Some(cycle);
        }
        if done.contains(room) {
            return None;
        }
        path.push(room.to_string());
        for next in uses.get(room).into_iter().flat_map(BTreeMap::keys) {
            if let Some(cycle) = visit(next, uses, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(room.to_string());
        None
    }
    let mut done = BTreeSet::new();
    uses.keys().find_map(|room| visit(room, uses, &mut Vec::new(), &mut done))
}

/// `a → b (the file of a that uses b) → a (the file of b that uses a)`.
fn describe(cycle: &[String], uses: &Uses) -> String {
    let mut text = cycle[0].clone();
    for pair in cycle.windows(2) {
        let file = &uses[&pair[0]][&pair[1]];
        text.push_str(&format!(" → {} ({})", pair[1], file.display()));
    }
    text
}
