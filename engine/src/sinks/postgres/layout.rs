//! From a stream's record type to table columns, and from each record to one line of
//! `COPY ... FROM STDIN` text.
//!
//! Columns, in encoding order (so a record is decoded front to back, one column after another):
//!
//! | record type | columns |
//! |---|---|
//! | a struct | one per field, named by the field |
//! | `(K, V)` with `V` a struct | `key`, then `V`'s fields |
//! | `(K, V)` otherwise | `key`, `value` |
//! | anything else | `value` |
//!
//! Column kinds: `String`/`char` → text, every integer → bigint, `bool` → boolean, `f32`/`f64`
//! → double precision, bytes → bytea, `Option<T>` → `T`, nullable; anything nested (`Vec`, a
//! tuple, a struct, `()`) → jsonb, rendered by [`crate::codec::render`]. An integer written to
//! a `timestamp`/`timestamptz` column is read as ms since the Unix epoch (UTC).
//!
//! COPY text format: columns separated by a tab, `\N` for NULL, and `\\`, `\n`, `\r`, `\t`
//! escaped inside values; bytea as `\\x<hex>`. The server parses every value, so a value its
//! column cannot take (out of range, too long) is refused by the database, naming the line.

use std::fmt::Write as _;

use sluice_sdk::TypeDesc;

use crate::codec::{read_varint, render, skip_value};

/// What a column holds, decided by the record type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `String`, `char`.
    Text,
    /// Any integer.
    Integer,
    /// `bool`.
    Boolean,
    /// `f32`, `f64`.
    Float,
    /// A byte string.
    Bytes,
    /// Anything nested: rendered as JSON.
    Json,
}

impl Kind {
    /// The column type `create_table` gives it, as PostgreSQL spells it.
    pub(crate) const fn sql(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Integer => "bigint",
            Self::Boolean => "boolean",
            Self::Float => "double precision",
            Self::Bytes => "bytea",
            Self::Json => "jsonb",
        }
    }

    /// The column types (`pg_type.typname`, spelled as in messages) an existing table may have
    /// for it; the first is [`Kind::sql`].
    pub(crate) const fn accepted(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Text => &[("text", "text"), ("varchar", "character varying"), ("bpchar", "character")],
            Self::Integer => &[
                ("int8", "bigint"),
                ("int4", "integer"),
                ("int2", "smallint"),
                ("numeric", "numeric"),
                ("timestamptz", "timestamptz (ms since the epoch)"),
                ("timestamp", "timestamp (ms since the epoch, UTC)"),
            ],
            Self::Boolean => &[("bool", "boolean")],
            Self::Float => &[("float8", "double precision"), ("float4", "real"), ("numeric", "numeric")],
            Self::Bytes => &[("bytea", "bytea")],
            Self::Json => &[("jsonb", "jsonb"), ("json", "json")],
        }
    }
}

/// How a column's values are written, decided by the table's column type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// As the value's own text.
    Plain,
    /// An integer as ms since the Unix epoch, written as a UTC timestamp (`zone`: with `+00`).
    EpochMillis {
        /// The column is `timestamptz`.
        zone: bool,
    },
}

/// One column of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Column {
    /// Its name (a struct field's, or `key`/`value`).
    pub name: String,
    /// The type of its values in the record.
    pub ty: TypeDesc,
    /// What it holds.
    pub kind: Kind,
    /// `Option<T>`: may be NULL.
    pub nullable: bool,
}

/// The columns of a stream's records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The record type.
    pub ty: TypeDesc,
    /// Its columns, in encoding order.
    pub columns: Vec<Column>,
}

/// Why records of a type cannot be a table's rows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LayoutError {
    /// A struct without fields.
    #[error("records of type {ty} have no fields, so no columns")]
    NoFields {
        /// The record type.
        ty: TypeDesc,
    },
    /// Two fields (or the key and a field) of one name.
    #[error("records of type {ty} give two columns named `{name}`")]
    TwoColumns {
        /// The record type.
        ty: TypeDesc,
        /// The column name.
        name: String,
    },
}

impl Layout {
    /// The columns of records of type `ty`; else why they cannot be a table's rows.
    pub(crate) fn of(ty: &TypeDesc) -> Result<Self, LayoutError> {
        let fields: Vec<(String, TypeDesc)> = match ty {
            TypeDesc::Struct { fields, .. } => fields.clone(),
            TypeDesc::Tuple(items) if items.len() == 2 => match &items[1] {
                TypeDesc::Struct { fields, .. } => {
                    std::iter::once(("key".to_string(), items[0].clone())).chain(fields.iter().cloned()).collect()
                }
                value => vec![("key".into(), items[0].clone()), ("value".into(), value.clone())],
            },
            other => vec![("value".into(), other.clone())],
        };
        if fields.is_empty() {
            return Err(LayoutError::NoFields { ty: ty.clone() });
        }
        let mut columns: Vec<Column> = Vec::with_capacity(fields.len());
        for (name, field) in fields {
            if columns.iter().any(|c| c.name == name) {
                return Err(LayoutError::TwoColumns { ty: ty.clone(), name });
            }
            let (kind, nullable) = kind_of(&field);
            columns.push(Column { name, ty: field, kind, nullable });
        }
        Ok(Self { ty: ty.clone(), columns })
    }

    /// The column names, comma-separated, for messages.
    pub(crate) fn names(&self) -> String {
        self.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// Appends `record` as one COPY text line (without the newline), each column written with
    /// its encoding in `encodings`.
    pub(crate) fn encode(&self, encodings: &[Encoding], record: &[u8], line: &mut String) -> Result<(), BadRecord> {
        let mut pos = 0;
        for (i, (column, &encoding)) in self.columns.iter().zip(encodings).enumerate() {
            if i > 0 {
                line.push('\t');
            }
            column_value(&column.ty, encoding, record, &mut pos, line).map_err(|bad| bad.at(&column.name))?;
        }
        if pos != record.len() {
            return Err(BadRecord { column: None, problem: Problem::Malformed });
        }
        Ok(())
    }
}

fn kind_of(ty: &TypeDesc) -> (Kind, bool) {
    match ty {
        TypeDesc::Option(inner) => (scalar_kind(inner).unwrap_or(Kind::Json), true),
        other => (scalar_kind(other).unwrap_or(Kind::Json), false),
    }
}

fn scalar_kind(ty: &TypeDesc) -> Option<Kind> {
    Some(match ty {
        TypeDesc::Char | TypeDesc::String => Kind::Text,
        TypeDesc::Unsigned(_) | TypeDesc::Signed(_) => Kind::Integer,
        TypeDesc::Bool => Kind::Boolean,
        TypeDesc::F32 | TypeDesc::F64 => Kind::Float,
        TypeDesc::Bytes => Kind::Bytes,
        _ => return None,
    })
}

/// A record that cannot become a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BadRecord {
    /// The column at fault, when known.
    pub column: Option<String>,
    /// What is wrong.
    pub problem: Problem,
}

/// What is wrong with a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    /// It does not match its type (a plugin bug).
    Malformed,
    /// A value its column cannot hold.
    Value(String),
}

impl Problem {
    fn at(self, column: &str) -> BadRecord {
        BadRecord { column: Some(column.to_string()), problem: self }
    }
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(column) = &self.column {
            write!(f, "column `{column}`: ")?;
        }
        match &self.problem {
            Problem::Malformed => f.write_str("the record does not match its type (a plugin bug)"),
            Problem::Value(what) => f.write_str(what),
        }
    }
}

fn column_value(
    ty: &TypeDesc,
    encoding: Encoding,
    buf: &[u8],
    pos: &mut usize,
    out: &mut String,
) -> Result<(), Problem> {
    match ty {
        TypeDesc::Option(inner) => match byte(buf, pos)? {
            0 => {
                out.push_str("\\N");
                Ok(())
            }
            1 => present(inner, encoding, buf, pos, out),
            _ => Err(Problem::Malformed),
        },
        other => present(other, encoding, buf, pos, out),
    }
}

/// A value that is there: a scalar as itself, anything else as JSON.
fn present(ty: &TypeDesc, encoding: Encoding, buf: &[u8], pos: &mut usize, out: &mut String) -> Result<(), Problem> {
    if scalar_kind(ty).is_some() {
        return scalar(ty, encoding, buf, pos, out);
    }
    let rest = buf.get(*pos..).ok_or(Problem::Malformed)?;
    let len = skip_value(ty, rest).ok_or(Problem::Malformed)?;
    let mut json = String::new();
    render(ty, &rest[..len], &mut json);
    *pos += len;
    escape(&json, out);
    Ok(())
}

fn scalar(ty: &TypeDesc, encoding: Encoding, buf: &[u8], pos: &mut usize, out: &mut String) -> Result<(), Problem> {
    match ty {
        TypeDesc::Bool => match byte(buf, pos)? {
            0 => out.push('f'),
            1 => out.push('t'),
            _ => return Err(Problem::Malformed),
        },
        TypeDesc::Unsigned(8) => integer(i128::from(byte(buf, pos)?), encoding, out)?,
        TypeDesc::Signed(8) => integer(i128::from(byte(buf, pos)? as i8), encoding, out)?,
        TypeDesc::Unsigned(_) => {
            let raw = read_varint(buf, pos).ok_or(Problem::Malformed)?;
            match i128::try_from(raw) {
                Ok(value) => integer(value, encoding, out)?,
                // Above i128::MAX: only a numeric column takes it, and the server says so.
                Err(_) => write!(out, "{raw}").map_err(|_| Problem::Malformed)?,
            }
        }
        TypeDesc::Signed(_) => {
            let raw = read_varint(buf, pos).ok_or(Problem::Malformed)?;
            integer((raw >> 1) as i128 ^ -((raw & 1) as i128), encoding, out)?;
        }
        TypeDesc::F32 => {
            let value = f32::from_le_bytes(take(buf, pos, 4)?.try_into().map_err(|_| Problem::Malformed)?);
            float(f64::from(value), &format!("{value:?}"), out);
        }
        TypeDesc::F64 => {
            let value = f64::from_le_bytes(take(buf, pos, 8)?.try_into().map_err(|_| Problem::Malformed)?);
            float(value, &format!("{value:?}"), out);
        }
        TypeDesc::Char | TypeDesc::String => {
            let len =
                usize::try_from(read_varint(buf, pos).ok_or(Problem::Malformed)?).map_err(|_| Problem::Malformed)?;
            escape(std::str::from_utf8(take(buf, pos, len)?).map_err(|_| Problem::Malformed)?, out);
        }
        TypeDesc::Bytes => {
            let len =
                usize::try_from(read_varint(buf, pos).ok_or(Problem::Malformed)?).map_err(|_| Problem::Malformed)?;
            // `\\x` in COPY text is bytea's `\x` hex input.
            out.push_str("\\\\x");
            for b in take(buf, pos, len)? {
                let _ = write!(out, "{b:02x}");
            }
        }
        _ => return Err(Problem::Malformed),
    }
    Ok(())
}

fn integer(value: i128, encoding: Encoding, out: &mut String) -> Result<(), Problem> {
    match encoding {
        Encoding::Plain => {
            let _ = write!(out, "{value}");
        }
        Encoding::EpochMillis { zone } => {
            let text = epoch_millis(value).ok_or_else(|| {
                Problem::Value(format!(
                    "{value} ms since the Unix epoch is not a time between the years 1 and 9999 (a timestamp column)"
                ))
            })?;
            out.push_str(&text);
            if zone {
                out.push_str("+00");
            }
        }
    }
    Ok(())
}

/// NaN and the infinities as PostgreSQL spells them; finite values as Rust's shortest
/// round-trip text (`shown`, which for an `f32` is the `f32`'s own).
fn float(value: f64, shown: &str, out: &mut String) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        out.push_str(shown);
    }
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SS.mmm` (UTC), for years 1 to 9999.
pub(crate) fn epoch_millis(ms: i128) -> Option<String> {
    const DAY: i128 = 86_400_000;
    let days = i64::try_from(ms.div_euclid(DAY)).ok()?;
    let of_day = ms.rem_euclid(DAY);
    let (year, month, day) = civil_from_days(days);
    if !(1..=9999).contains(&year) {
        return None;
    }
    let (hours, minutes) = (of_day / 3_600_000, of_day / 60_000 % 60);
    let (seconds, millis) = (of_day / 1000 % 60, of_day % 1000);
    Some(format!("{year:04}-{month:02}-{day:02} {hours:02}:{minutes:02}:{seconds:02}.{millis:03}"))
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Appends `text` escaped for COPY's text format.
pub(crate) fn escape(text: &str, out: &mut String) {
    if !text.contains(['\\', '\n', '\r', '\t']) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
}

/// The values of one COPY text line, unescaped; `None` for NULL. For messages.
pub(crate) fn fields(line: &str) -> Vec<Option<String>> {
    line.split('\t')
        .map(|field| {
            if field == "\\N" {
                return None;
            }
            let mut value = String::with_capacity(field.len());
            let mut chars = field.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    value.push(c);
                    continue;
                }
                match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some('t') => value.push('\t'),
                    Some(other) => value.push(other),
                    None => value.push('\\'),
                }
            }
            Some(value)
        })
        .collect()
}

fn byte(buf: &[u8], pos: &mut usize) -> Result<u8, Problem> {
    Ok(take(buf, pos, 1)?[0])
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], Problem> {
    let end = pos.checked_add(n).ok_or(Problem::Malformed)?;
    let bytes = buf.get(*pos..end).ok_or(Problem::Malformed)?;
    *pos = end;
    Ok(bytes)
}
