//! The sink's pure logic: columns from types, COPY text, timestamps, staging, the table check,
//! config validation. The database itself is exercised by `tests/e2e/postgres.rs`.

use serde::Serialize;
use sluice_sdk::TypeDesc;

use super::config::PostgresSinkConfig;
use super::layout::{Encoding, Kind, Layout, epoch_millis, fields};
use super::schema::{self, TableColumn, TableName};
use super::{row_label, stage, upsert};
use crate::block::Partition;
use crate::codec::write_frame;
use crate::sinks::Resource;

fn pair(key: TypeDesc, value: TypeDesc) -> TypeDesc {
    TypeDesc::Tuple(vec![key, value])
}

fn point() -> TypeDesc {
    TypeDesc::Struct {
        name: "Point".into(),
        fields: vec![
            ("x".into(), TypeDesc::Signed(32)),
            ("label".into(), TypeDesc::Option(Box::new(TypeDesc::String))),
        ],
    }
}

fn names(layout: &Layout) -> Vec<(&str, Kind, bool)> {
    layout.columns.iter().map(|c| (c.name.as_str(), c.kind, c.nullable)).collect()
}

#[test]
fn columns_come_from_structs_pairs_and_scalars() {
    let counts = Layout::of(&pair(TypeDesc::String, TypeDesc::Unsigned(64))).unwrap();
    assert_eq!(names(&counts), [("key", Kind::Text, false), ("value", Kind::Integer, false)]);
    let keyed_struct = Layout::of(&pair(TypeDesc::Unsigned(32), point())).unwrap();
    assert_eq!(
        names(&keyed_struct),
        [("key", Kind::Integer, false), ("x", Kind::Integer, false), ("label", Kind::Text, true)]
    );
    assert_eq!(names(&Layout::of(&point()).unwrap()), [("x", Kind::Integer, false), ("label", Kind::Text, true)]);
    assert_eq!(names(&Layout::of(&TypeDesc::F32).unwrap()), [("value", Kind::Float, false)]);
}

#[test]
fn nested_values_are_jsonb_and_duplicate_or_no_columns_are_refused() {
    let nested = Layout::of(&pair(TypeDesc::String, TypeDesc::Seq(Box::new(TypeDesc::Unsigned(16))))).unwrap();
    assert_eq!(nested.columns[1].kind, Kind::Json);
    let triple = Layout::of(&TypeDesc::Tuple(vec![TypeDesc::Bool; 3])).unwrap();
    assert_eq!(names(&triple), [("value", Kind::Json, false)]);
    let twice = TypeDesc::Struct { name: "V".into(), fields: vec![("key".into(), TypeDesc::Bool)] };
    let problem = Layout::of(&pair(TypeDesc::String, twice)).unwrap_err().to_string();
    assert!(problem.contains("two columns named `key`"), "{problem}");
    let empty = TypeDesc::Struct { name: "Empty".into(), fields: vec![] };
    assert!(Layout::of(&empty).unwrap_err().to_string().contains("no fields"));
}

fn line<T: Serialize>(ty: &TypeDesc, value: &T, encodings: Option<&[Encoding]>) -> String {
    let layout = Layout::of(ty).unwrap();
    let plain = vec![Encoding::Plain; layout.columns.len()];
    let mut out = String::new();
    layout.encode(encodings.unwrap_or(&plain), &postcard::to_allocvec(value).unwrap(), &mut out).unwrap();
    out
}

#[test]
fn values_become_copy_text() {
    let ty = pair(TypeDesc::String, TypeDesc::Signed(64));
    assert_eq!(line(&ty, &("tab\there\\ and\nnew", -5i64), None), "tab\\there\\\\ and\\nnew\t-5");
    assert_eq!(line(&TypeDesc::Unsigned(64), &u64::MAX, None), "18446744073709551615");
    assert_eq!(line(&TypeDesc::Signed(8), &-3i8, None), "-3");
    assert_eq!(line(&point(), &(7i32, None::<String>), None), "7\t\\N");
    assert_eq!(line(&point(), &(7i32, Some("a")), None), "7\ta");
    assert_eq!(line(&TypeDesc::Bool, &true, None), "t");
    assert_eq!(line(&TypeDesc::F64, &1.5f64, None), "1.5");
    assert_eq!(line(&TypeDesc::F32, &0.1f32, None), "0.1");
    assert_eq!(line(&TypeDesc::F64, &f64::NEG_INFINITY, None), "-Infinity");
    assert_eq!(line(&TypeDesc::F64, &f64::NAN, None), "NaN");
    // Postcard writes a byte string as a `Vec<u8>`: a length, then the bytes.
    assert_eq!(line(&TypeDesc::Bytes, &vec![1u8, 0xab], None), "\\\\x01ab");
}

#[test]
fn json_inside_copy_text_keeps_its_backslashes_escaped() {
    let ty = pair(TypeDesc::String, TypeDesc::Seq(Box::new(TypeDesc::String)));
    let text = line(&ty, &("k", vec!["a\"b"]), None);
    // JSON `["a\"b"]`, its backslash doubled for COPY.
    assert_eq!(text, "k\t[\"a\\\\\"b\"]");
    assert_eq!(fields(&text), [Some("k".to_string()), Some("[\"a\\\"b\"]".to_string())]);
}

#[test]
fn integers_in_timestamp_columns_are_ms_since_the_epoch() {
    assert_eq!(epoch_millis(0).as_deref(), Some("1970-01-01 00:00:00.000"));
    assert_eq!(epoch_millis(1_709_210_096_789).as_deref(), Some("2024-02-29 12:34:56.789"));
    assert_eq!(epoch_millis(-1).as_deref(), Some("1969-12-31 23:59:59.999"));
    assert_eq!(epoch_millis(253_402_300_799_999).as_deref(), Some("9999-12-31 23:59:59.999"));
    assert_eq!(epoch_millis(253_402_300_800_000), None);
    assert_eq!(epoch_millis(i128::MAX), None);
    let ty = pair(TypeDesc::String, TypeDesc::Unsigned(64));
    let zoned = [Encoding::Plain, Encoding::EpochMillis { zone: true }];
    assert_eq!(line(&ty, &("k", 1_000u64), Some(&zoned)), "k\t1970-01-01 00:00:01.000+00");
    let layout = Layout::of(&ty).unwrap();
    let bad = layout.encode(&zoned, &postcard::to_allocvec(&("k", u64::MAX)).unwrap(), &mut String::new()).unwrap_err();
    assert!(bad.to_string().starts_with("column `value`: 18446744073709551615 ms since the Unix epoch"), "{bad}");
}

#[test]
fn a_record_that_does_not_match_its_type_is_refused() {
    let layout = Layout::of(&pair(TypeDesc::String, TypeDesc::Unsigned(64))).unwrap();
    let plain = [Encoding::Plain; 2];
    for record in [&[5u8, b'a'][..], &[1, b'a', 1, 0][..], &[1, 0xff, 1][..]] {
        let bad = layout.encode(&plain, record, &mut String::new()).unwrap_err();
        assert!(bad.to_string().contains("does not match its type"), "{bad}");
    }
}

fn sink(extra: &str) -> PostgresSinkConfig {
    toml::from_str(&format!(
        "name = \"out\"\ninput = \"counts\"\nurl = \"postgres://me@db.example:5433/stats\"\ntable = \"counts\"\n{extra}"
    ))
    .unwrap()
}

fn errors(config: &PostgresSinkConfig) -> Vec<String> {
    config.validate().into_iter().map(|e| format!("{}: {}", e.location, e.message)).collect()
}

#[test]
fn config_names_the_field_and_what_was_expected() {
    assert_eq!(errors(&sink("")), Vec::<String>::new());
    assert_eq!(errors(&sink("mode = \"upsert\"\nkey = [\"key\"]")), Vec::<String>::new());
    let both = errors(&sink("url_env = \"X\""));
    assert_eq!(both, ["sinks `out`.url: give `url` or `url_env`, not both"]);
    let neither: PostgresSinkConfig = toml::from_str("name = \"out\"\ntable = \"t\"").unwrap();
    assert!(
        errors(&neither)[0].starts_with("sinks `out`.url: missing: `url = \"postgres://"),
        "{:?}",
        errors(&neither)
    );
    let unset: PostgresSinkConfig =
        toml::from_str("name = \"out\"\ntable = \"t\"\nurl_env = \"SLUICE_TEST_SURELY_UNSET\"").unwrap();
    assert_eq!(
        errors(&unset),
        [
            "sinks `out`.url_env: the environment variable `SLUICE_TEST_SURELY_UNSET` is not set; expected a database URL in it"
        ]
    );
    let upsert = errors(&sink("mode = \"upsert\""));
    assert!(upsert[0].starts_with("sinks `out`.key: mode = \"upsert\" needs `key = ["), "{upsert:?}");
    assert!(errors(&sink("key = [\"key\"]"))[0].starts_with("sinks `out`.key: only mode = \"upsert\" takes `key`"));
    assert!(errors(&sink("mode = \"upsert\"\nkey = []"))[0].ends_with("must name at least one column"));
    let no_user = errors(&sink("").clone_with_url("postgres://db.example/stats"));
    assert!(no_user[0].contains("names no user"), "{no_user:?}");
    let garbage = errors(&sink("").clone_with_url("postgres://me:secret@db.example:notaport/x"));
    assert!(
        garbage[0].starts_with("sinks `out`.url: not a PostgreSQL URL") && !garbage[0].contains("secret"),
        "{garbage:?}"
    );
    assert!(errors(&sink("progress_table = \"counts\""))[0].contains("is the table the sink writes"));
    let table: PostgresSinkConfig =
        toml::from_str("name = \"o\"\nurl = \"postgres://me@h/d\"\ntable = \"a.b.c\"").unwrap();
    assert!(errors(&table)[0].starts_with("sinks `o`.table: "), "{:?}", errors(&table));
    let unknown = toml::from_str::<PostgresSinkConfig>("name = \"o\"\ntable = \"t\"\ntabel = \"x\"").unwrap_err();
    assert!(unknown.to_string().contains("unknown field `tabel`"), "{unknown}");
}

impl PostgresSinkConfig {
    fn clone_with_url(&self, url: &str) -> Self {
        Self { url: Some(url.into()), ..self.clone() }
    }
}

#[test]
fn key_columns_must_be_columns_of_the_records() {
    let config = sink("mode = \"upsert\"\nkey = [\"word\"]");
    let problems = config.validate_input(&pair(TypeDesc::String, TypeDesc::Unsigned(64)));
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].location, "sinks `out`.key");
    assert_eq!(problems[0].message, "`word` is not a column of the records (type (String, u64): columns key, value)");
    assert!(
        sink("mode = \"upsert\"\nkey = [\"key\"]").validate_input(&pair(TypeDesc::String, TypeDesc::Bool)).is_empty()
    );
}

#[test]
fn the_same_table_through_another_spelling_of_the_url_is_the_same_resource() {
    let a = sink("");
    let b = PostgresSinkConfig { table: "public.counts".into(), ..sink("") }
        .clone_with_url("host=db.example port=5433 user=other dbname=stats");
    let table = |c: &PostgresSinkConfig| c.resources().into_iter().map(|(_, r)| r).collect::<Vec<_>>();
    assert_eq!(
        table(&a),
        [Resource::Table { database: "db.example:5433/stats".into(), table: "public.counts".into() }]
    );
    assert_eq!(table(&a), table(&b));
    assert_ne!(table(&a), table(&sink("").clone_with_url("postgres://me@db.example:5433/other")));
}

fn target(extra: &str) -> super::Target {
    let config = sink(extra);
    let ty = pair(TypeDesc::String, TypeDesc::Unsigned(64));
    let built = config.build("p", &ty, false);
    built.target.unwrap()
}

fn batch(time_ms: u64) -> crate::sinks::BatchRef<'static> {
    crate::sinks::BatchRef { time_ms, replayed: false, task: None, versions: &[] }
}

fn partition(records: &[(&str, u64)]) -> Partition {
    let mut data = Vec::new();
    for record in records {
        write_frame(&mut data, record).unwrap();
    }
    Partition { data, records: records.len() as u64 }
}

#[test]
fn upsert_stages_the_last_record_of_each_key_and_append_stages_all() {
    let layout = Layout::of(&pair(TypeDesc::String, TypeDesc::Unsigned(64))).unwrap();
    let parts = [partition(&[("a", 1), ("b", 2)]), partition(&[("a", 3), ("c", 4), ("b", 5)])];
    let plain = [Encoding::Plain; 2];
    let upserted = stage(&target("mode = \"upsert\"\nkey = [\"key\"]"), &layout, &plain, &parts, batch(7)).unwrap();
    assert_eq!(upserted.lines, ["a\t3", "b\t5", "c\t4"]);
    assert_eq!(upserted.time_ms, 7);
    let appended = stage(&target(""), &layout, &plain, &parts, batch(7)).unwrap();
    assert_eq!(appended.lines.len(), 5);
}

#[test]
fn rows_are_named_by_their_key_or_first_columns() {
    let layout = Layout::of(&pair(TypeDesc::Unsigned(8), point())).unwrap();
    assert_eq!(row_label(&layout, &["key".into()], "5\t-1\t\\N"), "row with key (key) = (5)");
    assert_eq!(row_label(&layout, &[], "5\t-1\t\\N"), "row (key, x, label) = (5, -1, NULL)");
    let counts = Layout::of(&pair(TypeDesc::String, TypeDesc::Unsigned(64))).unwrap();
    assert_eq!(row_label(&counts, &["key".into()], "w\\t1\t40000"), "row with key (key) = (w\t1)");
}

fn column(name: &str, typname: &str, shown: &str) -> TableColumn {
    TableColumn { name: name.into(), typname: typname.into(), shown: shown.into(), required: false }
}

#[test]
fn an_existing_table_is_checked_column_by_column() {
    let layout = Layout::of(&pair(TypeDesc::String, TypeDesc::Unsigned(64))).unwrap();
    let key = ["key".to_string()];
    let unique = [vec!["key".to_string()]];
    let good =
        [column("key", "varchar", "character varying(20)"), column("value", "timestamptz", "timestamp with time zone")];
    assert_eq!(
        schema::compare(&layout, &good, &key, &unique),
        Ok(vec![Encoding::Plain, Encoding::EpochMillis { zone: true }])
    );
    let wrong = [column("key", "text", "text"), column("value", "text", "text")];
    let problems = schema::compare(&layout, &wrong, &key, &unique).unwrap_err();
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].starts_with("column `value`: expected bigint (for u64; also taken: integer, smallint"),
        "{problems:?}"
    );
    assert!(problems[0].ends_with(", found text"), "{problems:?}");
    let mut required = column("id", "int8", "bigint");
    required.required = true;
    let missing = [column("key", "text", "text"), required];
    let problems = schema::compare(&layout, &missing, &key, &[]).unwrap_err();
    assert_eq!(
        problems[0],
        "column `value` is missing: expected bigint (for u64; also taken: integer, smallint, numeric, timestamptz (ms since the epoch), timestamp (ms since the epoch, UTC))"
    );
    assert!(problems[1].starts_with("column `id` (bigint) is NOT NULL without a default"), "{problems:?}");
    assert_eq!(problems[2], "no primary key or unique index on exactly (key); mode = \"upsert\" needs one");
}

#[test]
fn sql_quotes_every_name() {
    let table = TableName::parse("stats.Counts \"x\"").unwrap();
    assert_eq!(table.sql(), "\"stats\".\"Counts \"\"x\"\"\"");
    let layout = Layout::of(&pair(TypeDesc::String, TypeDesc::Option(Box::new(TypeDesc::F64)))).unwrap();
    assert_eq!(
        schema::create_table(&table, &layout, &["key".into()]),
        "CREATE TABLE IF NOT EXISTS \"stats\".\"Counts \"\"x\"\"\" (\"key\" text NOT NULL, \"value\" double precision, PRIMARY KEY (\"key\"))"
    );
    let target = target("mode = \"upsert\"\nkey = [\"key\"]");
    assert_eq!(
        upsert(&target, &layout, "pg_temp.\"sluice_stage\""),
        "INSERT INTO \"counts\" (\"key\", \"value\") SELECT \"key\", \"value\" FROM pg_temp.\"sluice_stage\" \
         ON CONFLICT (\"key\") DO UPDATE SET \"value\" = EXCLUDED.\"value\""
    );
    assert!(
        TableName::parse("").is_err() && TableName::parse("a.").is_err() && TableName::parse(&"x".repeat(64)).is_err()
    );
}
