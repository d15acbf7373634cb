//! Golden files: what each sink of a test is expected to write, one file per sink,
//! `<dir>/<sink>.jsonl`. Each batch starts with a line `# batch N`; its records follow as the
//! file sink renders them (JSON), sorted, since their order across partitions is not part of
//! the result. A difference is shown per batch: records expected and not written, records
//! written and not expected.

use std::collections::BTreeMap;
use std::path::Path;

/// One sink's records, per batch (each batch's records sorted).
pub(crate) type Batches = Vec<Vec<String>>;

/// The text of a golden file.
pub(crate) fn format(batches: &Batches) -> String {
    let mut text = String::new();
    for (index, records) in batches.iter().enumerate() {
        text.push_str(&format!("# batch {}\n", index + 1));
        for record in records {
            text.push_str(record);
            text.push('\n');
        }
    }
    text
}

/// A golden file's batches; an error names the line.
pub(crate) fn parse(path: &Path, text: &str) -> Result<Batches, String> {
    let mut batches: Batches = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if let Some(header) = line.strip_prefix("# batch ") {
            if header.trim().parse::<usize>().ok() != Some(batches.len() + 1) {
                return Err(format!("{}:{}: expected `# batch {}`", path.display(), number + 1, batches.len() + 1));
            }
            batches.push(Vec::new());
            continue;
        }
        match batches.last_mut() {
            Some(batch) => batch.push(line.to_string()),
            None if line.is_empty() => {}
            None => return Err(format!("{}:{}: a golden file starts with `# batch 1`", path.display(), number + 1)),
        }
    }
    for batch in &mut batches {
        batch.sort();
    }
    Ok(batches)
}

/// How the written records differ from the expected ones, batch by batch; empty if they match.
pub(crate) fn diff(expected: &Batches, written: &Batches) -> Vec<String> {
    let mut lines = Vec::new();
    for index in 0..expected.len().max(written.len()) {
        let (want, got) = (expected.get(index), written.get(index));
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for record in want.into_iter().flatten() {
            *counts.entry(record).or_default() += 1;
        }
        for record in got.into_iter().flatten() {
            *counts.entry(record).or_default() -= 1;
        }
        let differing: Vec<(&str, i64)> = counts.into_iter().filter(|(_, n)| *n != 0).collect();
        let shape = match (want, got) {
            (None, _) => " (not expected: the golden file has no such batch)",
            (_, None) => " (not written: the test ran fewer batches)",
            _ => "",
        };
        if differing.is_empty() && shape.is_empty() {
            continue;
        }
        lines.push(format!("batch {}{shape}:", index + 1));
        for (record, n) in differing {
            let (sign, times) = if n > 0 { ("-", n) } else { ("+", -n) };
            for _ in 0..times {
                lines.push(format!("  {sign} {record}"));
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(b: &[&[&str]]) -> Batches {
        b.iter().map(|records| records.iter().map(|r| r.to_string()).collect()).collect()
    }

    #[test]
    fn a_golden_file_reads_back_what_was_written() {
        let written = batches(&[&["[\"a\",1]", "[\"b\",2]"], &[], &["\"x\""]]);
        let text = format(&written);
        assert_eq!(text, "# batch 1\n[\"a\",1]\n[\"b\",2]\n# batch 2\n# batch 3\n\"x\"\n");
        assert_eq!(parse(Path::new("g"), &text).unwrap(), written);
        assert!(diff(&written, &written).is_empty());
        let err = parse(Path::new("g"), "# batch 1\n# batch 3\n").unwrap_err();
        assert_eq!(err, "g:2: expected `# batch 2`");
    }

    #[test]
    fn a_difference_shows_missing_and_extra_records_per_batch() {
        let expected = batches(&[&["a", "b", "b"], &["c"]]);
        let written = batches(&[&["a", "b", "d"], &["c"], &["e"]]);
        assert_eq!(
            diff(&expected, &written),
            ["batch 1:", "  - b", "  + d", "batch 3 (not expected: the golden file has no such batch):", "  + e"]
        );
    }
}
