//! A test's input files, cut into batches: a line holding only `---` ends a batch, or every
//! `--batch-lines N` lines do. Each other line is one record of its source: the line itself for a
//! source of lines, else the record as JSON (a Kafka source with `format = "record"`: `{"key":
//! null, "value": "...", ...}`), parsed against the source's record type.

use std::path::Path;

use sluice_sdk::TypeDesc;

use crate::block::Partition;
use crate::codec;

/// How a file is cut into batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cut {
    /// At lines holding only `---` (none: the whole file is one batch).
    Marker,
    /// Every N records (N ≥ 1).
    Lines(usize),
}

/// The line that ends a batch under [`Cut::Marker`].
pub(crate) const MARKER: &str = "---";

/// `path`'s records of type `ty`, one partition per batch; an error names the file and line.
pub(crate) fn batches(path: &Path, ty: &TypeDesc, cut: Cut) -> Result<Vec<Partition>, String> {
    let text = std::fs::read_to_string(path).map_err(|err| format!("{}: cannot read: {err}", path.display()))?;
    let mut batches = vec![Partition { data: Vec::new(), records: 0 }];
    for (number, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if cut == Cut::Marker && line.trim_end() == MARKER {
            batches.push(Partition { data: Vec::new(), records: 0 });
            continue;
        }
        if let Cut::Lines(n) = cut
            && batches.last().is_some_and(|b| b.records as usize == n)
        {
            batches.push(Partition { data: Vec::new(), records: 0 });
        }
        let batch = batches.last_mut().expect("one batch at least");
        record(ty, line, &mut batch.data).map_err(|why| format!("{}:{}: {why}", path.display(), number + 1))?;
        batch.records += 1;
    }
    // A file that ends with a marker has no empty batch after it.
    if batches.len() > 1 && batches.last().is_some_and(|b| b.records == 0) {
        batches.pop();
    }
    Ok(batches)
}

/// Appends `line` as one frame of a record of type `ty`.
fn record(ty: &TypeDesc, line: &str, out: &mut Vec<u8>) -> Result<(), String> {
    if *ty == TypeDesc::String {
        return codec::write_frame(out, line).map_err(|err| err.to_string());
    }
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|err| format!("a record of this source is {ty} as JSON: {err}"))?;
    let mut encoded = Vec::new();
    codec::encode_json(ty, &value, &mut encoded).map_err(|misfit| format!("not a {ty}: {misfit}"))?;
    codec::push_frame(out, &encoded);
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_sdk::abi::Frames;

    use super::*;

    fn lines(batch: &Partition) -> Vec<String> {
        Frames::new(&batch.data).map(|f| postcard::from_bytes::<String>(f).unwrap()).collect()
    }

    #[test]
    fn a_file_is_cut_at_markers_or_every_n_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "a b\nc\n---\n\nd\n---\n").unwrap();
        let cut = batches(&path, &TypeDesc::String, Cut::Marker).unwrap();
        assert_eq!(cut.iter().map(lines).collect::<Vec<_>>(), [vec!["a b", "c"], vec!["", "d"]]);
        std::fs::write(&path, "1\n2\n3\n4\n5\n").unwrap();
        let cut = batches(&path, &TypeDesc::String, Cut::Lines(2)).unwrap();
        assert_eq!(cut.iter().map(|b| b.records).collect::<Vec<_>>(), [2, 2, 1]);
        std::fs::write(&path, "").unwrap();
        assert_eq!(batches(&path, &TypeDesc::String, Cut::Marker).unwrap().len(), 1);
    }

    #[test]
    fn a_record_that_is_not_of_its_type_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "[\"a\", 1]\n[\"b\", \"x\"]\n").unwrap();
        let pair = TypeDesc::Tuple(vec![TypeDesc::String, TypeDesc::Unsigned(64)]);
        let err = batches(&path, &pair, Cut::Marker).unwrap_err();
        assert_eq!(
            err,
            format!(
                "{}:2: not a (String, u64): [1]: expected an integer from 0 to 18446744073709551615, found a string",
                path.display()
            )
        );
    }
}
