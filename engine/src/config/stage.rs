//! `[[stages]]`: a name, the streams it reads, and `op` — one of [`StageOp`]'s variants, each
//! holding the fields only that op takes.
//!
//! Reading a stage (a custom `Deserialize`, since serde's `flatten` does not work with
//! `deny_unknown_fields`): the table's `name` and `op` first; an unknown op is serde's
//! `unknown variant` error. Then every key must be one the op takes, else the stage is refused
//! when the file is read: ``stages `<name>`.<field>: op `<op>` takes no `<field>` ...``, naming
//! the ops that do take it. What the op takes is split three ways: `input` (ops that read one
//! stream) or `inputs` (`union`, `join`, `cogroup`); the plugin call ([`CallConfig`], for ops
//! that call a function, and `event_window`); the op's own fields, read into its struct (with
//! `deny_unknown_fields` as well). Values a field cannot take are serde errors naming the
//! stage and the field. Whatever needs the whole file (known inputs, plugins, sinks, the batch
//! interval) is checked later, by [`super::PipelineFile::validate`], which collects every
//! problem.

use std::time::Duration;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use sluice_sdk::abi::FunctionKind;

use super::{ConfigError, PipelineConfig, too_long};
use crate::fields::{MAX_INTERVAL, MAX_INTERVAL_TEXT, MAX_SPAN, MAX_SPAN_TEXT, duration, size};

/// `[[stages]]`.
#[derive(Clone, Debug)]
pub(crate) struct StageConfig {
    /// Unique among sources, stages and sinks.
    pub name: String,
    /// The streams it reads: `input = "<name>"` for ops with one input; `inputs = [...]` for
    /// `union` (one or more) and `join`, `cogroup` (two, left then right). `None`: not given.
    pub inputs: Option<Vec<String>>,
    /// Its plugin call, for ops that call a function and for `event_window` (which may): `None`
    /// for every other op.
    pub call: Option<CallConfig>,
    /// What it does, with the fields only this op takes.
    pub op: StageOp,
}

/// The plugin call of a stage: which function, its limits, and what a failed call does.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallConfig {
    /// The plugin (a key of `[plugins]`) holding its function.
    pub plugin: Option<String>,
    /// The function's name in the plugin (`event_window`: a reduce function for the values of
    /// each window; without one, they are counted).
    pub function: Option<String>,
    /// Deadline of each plugin call of this stage (default: `--call-timeout`); at least 10ms, at
    /// most 24h.
    #[serde(default, with = "duration::option")]
    pub timeout: Option<Duration>,
    /// Memory cap of the plugin's instance while it serves this stage ("64MiB"; default:
    /// `--memory-limit-mib`).
    #[serde(default, with = "size::option")]
    pub memory_limit: Option<usize>,
    /// What a failed plugin call does (default `fail`).
    pub on_error: Option<OnError>,
    /// `on_error = "retry"`: how many more calls (default 2).
    pub retries: Option<u32>,
    /// `on_error = "dead_letter"`: the sink (with no `input`) that receives failed records.
    pub dead_letter: Option<String>,
    /// The parameters of its function (`params = { k = 10 }`), checked against the type the
    /// function takes (its last argument `&P`) when the plugin is loaded.
    pub params: Option<toml::Table>,
}

/// An operator, as in Spark's DStream API (snake_case names), with the fields only it takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StageOp {
    /// One record in, one out (plugin `map` function).
    Map,
    /// One record in, any number out (plugin `flat_map` function).
    FlatMap,
    /// Keep the records the plugin's `filter` function accepts.
    Filter,
    /// One call per partition with all of its records (plugin `map_partitions` function).
    MapPartitions,
    /// One call per batch with all of its records (plugin `transform` function).
    Transform,
    /// All records of several streams of one type (`inputs`).
    Union,
    /// Spread the records over `partitions` partitions.
    Repartition(RepartitionConfig),
    /// Combine all records of the batch into one with a `reduce` function.
    Reduce,
    /// The number of records in each batch, as one record (no plugin).
    Count,
    /// `(record, count)` per distinct record of the batch (no plugin).
    CountByValue,
    /// Combine the values of each key with the plugin's `reduce` function (input must be keyed).
    ReduceByKey,
    /// `(K, [V...])` per key of a keyed stream (no plugin).
    GroupByKey,
    /// Join two keyed streams on their keys (`inputs`, `how`).
    Join(JoinConfig),
    /// `(K, ([V...], [W...]))` per key of two keyed streams (`inputs`).
    Cogroup,
    /// The records of the last `window` of batches, every `slide`.
    Window(WindowConfig),
    /// The number of records in the window, every `slide`.
    CountByWindow(WindowConfig),
    /// All records of the window combined with a `reduce` function, every `slide`.
    ReduceByWindow(WindowConfig),
    /// Values per key over the window combined with `function` (and `inverse`, if given).
    ReduceByKeyAndWindow(ReduceByKeyAndWindowConfig),
    /// `(record, count)` per distinct record over the window, every `slide`.
    CountByValueAndWindow(WindowConfig),
    /// Per-key state updated every batch by an `update_state` function.
    UpdateStateByKey,
    /// Per-key state and emitted records, by a `map_with_state` function called only for keys
    /// with new values or whose state timed out (`state_timeout`).
    MapWithState(MapWithStateConfig),
    /// `(K, T)` per record, the key from a `key_by` function.
    KeyBy,
    /// Event-time windows per key: tumbling (`window`), sliding (`window`, `slide`) or session
    /// (`gap`), closed when the watermark (max event time − `allowed_lateness`) passes their end.
    EventWindow(EventWindowConfig),
}

/// `repartition`'s own field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RepartitionConfig {
    /// The number of partitions (1 to [`MAX_PARTITIONS`]).
    pub partitions: Option<usize>,
}

/// `join`'s own field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JoinConfig {
    /// `inner` (default), `left`, `right` or `full`.
    pub how: Option<JoinHow>,
}

/// The fields of ops over a window of batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WindowConfig {
    /// The window length ("30s"), a multiple of `batch_interval`; at most 365d.
    #[serde(default, with = "duration::option")]
    pub window: Option<Duration>,
    /// How often the window is computed ("10s"), a multiple of `batch_interval`; default
    /// `batch_interval`; at most 365d.
    #[serde(default, with = "duration::option")]
    pub slide: Option<Duration>,
}

/// `reduce_by_key_and_window`'s own fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReduceByKeyAndWindowConfig {
    /// The window length ("30s"), a multiple of `batch_interval`; at most 365d.
    #[serde(default, with = "duration::option")]
    pub window: Option<Duration>,
    /// How often the window is computed ("10s"), a multiple of `batch_interval`; default
    /// `batch_interval`; at most 365d.
    #[serde(default, with = "duration::option")]
    pub slide: Option<Duration>,
    /// The inverse of `function` (`inverse(reduce(a, b), b) == a`), so each slide only adds the
    /// batches entering the window and removes those leaving it.
    pub inverse: Option<String>,
}

/// `map_with_state`'s own field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MapWithStateConfig {
    /// A key whose state has seen no new value for this long (in batch time) times out: the
    /// function is called once more with no values, then the state is dropped. At least 1ms, at
    /// most 365d.
    #[serde(default, with = "duration::option")]
    pub state_timeout: Option<Duration>,
}

/// `event_window`'s own fields (its optional reduce function is `function` of the call).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventWindowConfig {
    /// Tumbling or sliding windows of this length (at most 365d).
    #[serde(default, with = "duration::option")]
    pub window: Option<Duration>,
    /// Sliding windows: how far apart they start; must divide `window` (at most 365d).
    #[serde(default, with = "duration::option")]
    pub slide: Option<Duration>,
    /// A `timestamp` function of the plugin giving each record's event time (ms since the Unix
    /// epoch). Without it, a record's event time is its batch time.
    pub timestamp: Option<String>,
    /// A field of the value struct holding each record's event time, ms since the Unix epoch
    /// (`i64`, `u64` or an `Option` of one; `None` or negative: the batch time), e.g.
    /// `timestamp` of a Kafka source's `KafkaRecord`: no plugin function needed.
    pub time_field: Option<String>,
    /// Session windows that close after this long without an event for the key (at most
    /// 365d).
    #[serde(default, with = "duration::option")]
    pub gap: Option<Duration>,
    /// How far behind the largest event time seen the watermark trails (default 0, at most
    /// 365d). A record whose windows the watermark has already closed is late.
    #[serde(default, with = "duration::option")]
    pub allowed_lateness: Option<Duration>,
}

/// The fields of ops that have none of their own: every key must have been taken before.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

/// The most partitions `repartition` may ask for.
pub(crate) const MAX_PARTITIONS: usize = 4096;

/// How many streams an op reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arity {
    /// `input = "..."`.
    One,
    /// `inputs = ["a", "b"]`.
    Two,
    /// `inputs = [...]`, one or more.
    Many,
}

/// Every op's name, in the order of [`StageOp`].
const OPS: &[&str] = &[
    "map",
    "flat_map",
    "filter",
    "map_partitions",
    "transform",
    "union",
    "repartition",
    "reduce",
    "count",
    "count_by_value",
    "reduce_by_key",
    "group_by_key",
    "join",
    "cogroup",
    "window",
    "count_by_window",
    "reduce_by_window",
    "reduce_by_key_and_window",
    "count_by_value_and_window",
    "update_state_by_key",
    "map_with_state",
    "key_by",
    "event_window",
];

impl StageOp {
    /// The op named `name` in a pipeline file, from `fields` (the table of its own fields):
    /// `None` for an unknown name.
    fn read(name: &str, fields: toml::Table) -> Option<Result<Self, toml::de::Error>> {
        fn own<T: DeserializeOwned>(fields: toml::Table, op: fn(T) -> StageOp) -> Result<StageOp, toml::de::Error> {
            T::deserialize(toml::Value::Table(fields)).map(op)
        }
        fn none(fields: toml::Table, op: StageOp) -> Result<StageOp, toml::de::Error> {
            NoFields::deserialize(toml::Value::Table(fields)).map(|NoFields {}| op)
        }
        Some(match name {
            "map" => none(fields, Self::Map),
            "flat_map" => none(fields, Self::FlatMap),
            "filter" => none(fields, Self::Filter),
            "map_partitions" => none(fields, Self::MapPartitions),
            "transform" => none(fields, Self::Transform),
            "union" => none(fields, Self::Union),
            "repartition" => own(fields, Self::Repartition),
            "reduce" => none(fields, Self::Reduce),
            "count" => none(fields, Self::Count),
            "count_by_value" => none(fields, Self::CountByValue),
            "reduce_by_key" => none(fields, Self::ReduceByKey),
            "group_by_key" => none(fields, Self::GroupByKey),
            "join" => own(fields, Self::Join),
            "cogroup" => none(fields, Self::Cogroup),
            "window" => own(fields, Self::Window),
            "count_by_window" => own(fields, Self::CountByWindow),
            "reduce_by_window" => own(fields, Self::ReduceByWindow),
            "reduce_by_key_and_window" => own(fields, Self::ReduceByKeyAndWindow),
            "count_by_value_and_window" => own(fields, Self::CountByValueAndWindow),
            "update_state_by_key" => none(fields, Self::UpdateStateByKey),
            "map_with_state" => own(fields, Self::MapWithState),
            "key_by" => none(fields, Self::KeyBy),
            "event_window" => own(fields, Self::EventWindow),
            _ => return None,
        })
    }

    /// The names of the fields only op `name` takes (those of its struct, as serde reads them).
    fn own_fields(name: &str) -> &'static [&'static str] {
        match name {
            "repartition" => fields_of::<RepartitionConfig>(),
            "join" => fields_of::<JoinConfig>(),
            "window" | "count_by_window" | "reduce_by_window" | "count_by_value_and_window" => {
                fields_of::<WindowConfig>()
            }
            "reduce_by_key_and_window" => fields_of::<ReduceByKeyAndWindowConfig>(),
            "map_with_state" => fields_of::<MapWithStateConfig>(),
            "event_window" => fields_of::<EventWindowConfig>(),
            _ => &[],
        }
    }

    /// The name used in pipeline files.
    pub(crate) const fn name(&self) -> &'static str {
        match self {
            Self::Map => "map",
            Self::FlatMap => "flat_map",
            Self::Filter => "filter",
            Self::MapPartitions => "map_partitions",
            Self::Transform => "transform",
            Self::Union => "union",
            Self::Repartition(_) => "repartition",
            Self::Reduce => "reduce",
            Self::Count => "count",
            Self::CountByValue => "count_by_value",
            Self::ReduceByKey => "reduce_by_key",
            Self::GroupByKey => "group_by_key",
            Self::Join(_) => "join",
            Self::Cogroup => "cogroup",
            Self::Window(_) => "window",
            Self::CountByWindow(_) => "count_by_window",
            Self::ReduceByWindow(_) => "reduce_by_window",
            Self::ReduceByKeyAndWindow(_) => "reduce_by_key_and_window",
            Self::CountByValueAndWindow(_) => "count_by_value_and_window",
            Self::UpdateStateByKey => "update_state_by_key",
            Self::MapWithState(_) => "map_with_state",
            Self::KeyBy => "key_by",
            Self::EventWindow(_) => "event_window",
        }
    }

    /// The kind of plugin function the op calls, if it must call one.
    pub(crate) const fn function_kind(&self) -> Option<FunctionKind> {
        match self {
            Self::Map => Some(FunctionKind::Map),
            Self::FlatMap => Some(FunctionKind::FlatMap),
            Self::Filter => Some(FunctionKind::Filter),
            Self::MapPartitions => Some(FunctionKind::MapPartitions),
            Self::Transform => Some(FunctionKind::Transform),
            Self::Reduce | Self::ReduceByKey | Self::ReduceByWindow(_) | Self::ReduceByKeyAndWindow(_) => {
                Some(FunctionKind::Reduce)
            }
            Self::UpdateStateByKey => Some(FunctionKind::UpdateState),
            Self::MapWithState(_) => Some(FunctionKind::MapWithState),
            Self::KeyBy => Some(FunctionKind::KeyBy),
            _ => None,
        }
    }

    /// How many inputs it reads.
    pub(crate) fn arity(&self) -> Arity {
        arity(self.name())
    }

    /// The window of an op over a window of batches (`window`, `slide`: multiples of the batch
    /// interval); `None` for other ops (`event_window` included: its windows are of event time).
    pub(crate) fn batch_window(&self) -> Option<WindowConfig> {
        match self {
            Self::Window(w) | Self::CountByWindow(w) | Self::ReduceByWindow(w) | Self::CountByValueAndWindow(w) => {
                Some(*w)
            }
            Self::ReduceByKeyAndWindow(w) => Some(WindowConfig { window: w.window, slide: w.slide }),
            _ => None,
        }
    }
}

/// How many inputs op `name` reads.
fn arity(name: &str) -> Arity {
    match name {
        "union" => Arity::Many,
        "join" | "cogroup" => Arity::Two,
        _ => Arity::One,
    }
}

/// Whether op `name` has a plugin call ([`CallConfig`]): every op that calls a function, and
/// `event_window`, whose timestamp and reduce functions are optional.
fn has_call(name: &str) -> bool {
    // Every op's own fields are optional, so an empty table reads as the op.
    let calls = |op: StageOp| op.function_kind().is_some() || matches!(op, StageOp::EventWindow(_));
    StageOp::read(name, toml::Table::new()).and_then(Result::ok).is_some_and(calls)
}

/// Every field op `name` takes, in the order a message lists them.
fn fields_taken(name: &str) -> Vec<&'static str> {
    let mut fields = vec!["name", "op", if arity(name) == Arity::One { "input" } else { "inputs" }];
    if has_call(name) {
        fields.extend(fields_of::<CallConfig>());
    }
    fields.extend(StageOp::own_fields(name));
    fields
}

/// The field names serde's derive gives `T` (what its `deny_unknown_fields` accepts), asked of a
/// deserializer that records them and reads nothing.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Self::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// `stages `<name>`.<field>: <message>`, or `stages `<name>`: <message>` when the field is not
/// known: a toml error of one of the stage's parts, with the key toml recorded for it.
fn located(stage: &str, field: Option<&str>, error: &toml::de::Error) -> String {
    let text = error.to_string();
    let text = text.trim_end();
    // A value error carries no span here (the stage's table was read already): toml's text is
    // the message, then `in `<key>``.
    match (field, text.rsplit_once("\nin `")) {
        (Some(field), _) => format!("stages `{stage}`.{field}: {}", error.message().trim_end()),
        (None, Some((message, key))) => format!("stages `{stage}`.{}: {message}", key.trim_end_matches('`')),
        (None, None) => format!("stages `{stage}`: {text}"),
    }
}

impl<'de> Deserialize<'de> for StageConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut table = toml::Table::deserialize(deserializer)?;
        let string = |value: toml::Value, at: &str, field: &str| {
            String::deserialize(value).map_err(|e| D::Error::custom(located(at, Some(field), &e)))
        };
        let name = match table.remove("name") {
            Some(value) => string(value, "", "name")?,
            None => return Err(D::Error::missing_field("name")),
        };
        let op_name = match table.remove("op") {
            Some(value) => string(value, &name, "op")?,
            None => return Err(D::Error::custom(format!("stages `{name}`: missing field `op`"))),
        };
        if StageOp::read(&op_name, toml::Table::new()).is_none() {
            return Err(D::Error::unknown_variant(&op_name, OPS));
        }
        let taken = fields_taken(&op_name);
        if let Some(field) = table.keys().find(|key| !taken.contains(&key.as_str())) {
            let takers: Vec<&str> =
                OPS.iter().copied().filter(|op| fields_taken(op).contains(&field.as_str())).collect();
            let expected = taken.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ");
            let message = if takers.is_empty() {
                format!("unknown field `{field}`, expected one of {expected}")
            } else {
                {
                    let does = if takers.len() == 1 { "does" } else { "do" };
                    format!("op `{op_name}` takes no `{field}` ({} {does}); it takes {expected}", takers.join(", "))
                }
            };
            return Err(D::Error::custom(format!("stages `{name}`.{field}: {message}")));
        }
        let inputs = if arity(&op_name) == Arity::One {
            table.remove("input").map(|value| string(value, &name, "input").map(|input| vec![input])).transpose()?
        } else {
            table
                .remove("inputs")
                .map(|value| {
                    Vec::<String>::deserialize(value).map_err(|e| D::Error::custom(located(&name, Some("inputs"), &e)))
                })
                .transpose()?
        };
        let call = if has_call(&op_name) {
            let mut fields = toml::Table::new();
            for field in fields_of::<CallConfig>() {
                if let Some(value) = table.remove(*field) {
                    fields.insert((*field).to_string(), value);
                }
            }
            let call = CallConfig::deserialize(toml::Value::Table(fields))
                .map_err(|e| D::Error::custom(located(&name, None, &e)))?;
            Some(call)
        } else {
            None
        };
        let op = StageOp::read(&op_name, table)
            .expect("a known op")
            .map_err(|e| D::Error::custom(located(&name, None, &e)))?;
        Ok(Self { name, inputs, call, op })
    }
}

impl StageConfig {
    /// The names of the streams it reads.
    pub(crate) fn input_names(&self) -> Vec<&str> {
        self.inputs.iter().flatten().map(String::as_str).collect()
    }

    /// The plugin its call names, if any.
    pub(crate) fn plugin(&self) -> Option<&str> {
        self.call.as_ref()?.plugin.as_deref()
    }

    /// The function its call names, if any.
    pub(crate) fn function(&self) -> Option<&str> {
        self.call.as_ref()?.function.as_deref()
    }

    /// `reduce_by_key_and_window`'s inverse function, if given.
    pub(crate) fn inverse(&self) -> Option<&str> {
        match &self.op {
            StageOp::ReduceByKeyAndWindow(w) => w.inverse.as_deref(),
            _ => None,
        }
    }

    /// `event_window`'s timestamp function, if given.
    pub(crate) fn timestamp(&self) -> Option<&str> {
        match &self.op {
            StageOp::EventWindow(e) => e.timestamp.as_deref(),
            _ => None,
        }
    }

    /// Every plugin function it calls: `function`, `inverse`, `timestamp`.
    pub(crate) fn functions(&self) -> impl Iterator<Item = &str> {
        self.function().into_iter().chain(self.inverse()).chain(self.timestamp())
    }

    /// Its plugin-call settings (all unset for an op without a call).
    pub(crate) fn call(&self) -> &CallConfig {
        static NONE: CallConfig = CallConfig {
            plugin: None,
            function: None,
            timeout: None,
            memory_limit: None,
            on_error: None,
            retries: None,
            dead_letter: None,
            params: None,
        };
        self.call.as_ref().unwrap_or(&NONE)
    }

    /// Checks what needs the whole file (`c`: the plugins, the sinks, the batch interval) and
    /// the values of its fields; that each field belongs to the op was checked when the file was
    /// read. `streams` are the names an input may take; pushes every problem to `errors`.
    pub(super) fn validate(
        &self,
        c: &PipelineConfig,
        streams: &[&str],
        unknown_input: &dyn Fn(&str) -> String,
        errors: &mut Vec<ConfigError>,
    ) {
        let at = format!("stages `{}`", self.name);
        let op = &self.op;
        let name = op.name();
        let call = self.call();
        let event = match op {
            StageOp::EventWindow(event) => Some(event),
            _ => None,
        };
        let mut error = |field: &str, message: String| {
            let location = if field.is_empty() { at.clone() } else { format!("{at}.{field}") };
            errors.push(ConfigError::new(location, message));
        };
        match (op.arity(), &self.inputs) {
            (Arity::One, Some(inputs)) => {
                for input in inputs {
                    if !streams.contains(&input.as_str()) {
                        error("input", unknown_input(input));
                    }
                }
            }
            (Arity::One, None) => error("input", format!("op `{name}` reads one stream: `input = \"<name>\"`")),
            (arity, Some(inputs)) => {
                let count_ok = match arity {
                    Arity::Two => inputs.len() == 2,
                    _ => !inputs.is_empty(),
                };
                if !count_ok {
                    let expected = if arity == Arity::Two {
                        "exactly two streams, left then right"
                    } else {
                        "one or more streams"
                    };
                    error("inputs", format!("op `{name}` reads {expected}, found {}", inputs.len()));
                }
                for input in inputs {
                    if !streams.contains(&input.as_str()) {
                        error("inputs", unknown_input(input));
                    }
                }
            }
            (_, None) => error("inputs", format!("op `{name}` reads several streams: `inputs = [\"a\", \"b\"]`")),
        }
        match (op.function_kind(), event) {
            (Some(_), _) => {
                match &call.plugin {
                    None => error("plugin", format!("op `{name}` needs `plugin = \"<name from [plugins]>\"`")),
                    Some(plugin) if !c.plugins.contains_key(plugin) => error(
                        "plugin",
                        format!(
                            "plugin `{plugin}` is not declared in [plugins] (declared: {})",
                            if c.plugins.is_empty() {
                                "none".to_string()
                            } else {
                                c.plugins.keys().cloned().collect::<Vec<_>>().join(", ")
                            }
                        ),
                    ),
                    Some(_) => {}
                }
                if call.function.is_none() {
                    error("function", format!("op `{name}` needs `function = \"<exported function>\"`"));
                }
            }
            (None, Some(event)) => match (&call.plugin, call.function.is_some() || event.timestamp.is_some()) {
                (None, true) => {
                    error("plugin", "a timestamp or reduce function needs `plugin = \"<name from [plugins]>\"`".into())
                }
                (Some(_), false) => error("", format!("op `{name}` takes no plugin or function")),
                _ => {}
            },
            // Any field of a plugin call was refused when the file was read.
            (None, None) => {}
        }
        if let Some(event) = event {
            match (event.window, event.gap) {
                (Some(_), Some(_)) => {
                    error("gap", "give `window` (tumbling/sliding) or `gap` (sessions), not both".into())
                }
                (None, None) => {
                    error("window", "event_window needs `window = \"<duration>\"` or `gap = \"<duration>\"`".into())
                }
                (None, Some(gap)) if gap.is_zero() => error("gap", "must be longer than 0".into()),
                (Some(window), _) if window.is_zero() => error("window", "must be longer than 0".into()),
                _ => {}
            }
            if let (Some(window), Some(slide)) = (event.window, event.slide)
                && (slide.is_zero() || slide > window || !window.as_millis().is_multiple_of(slide.as_millis().max(1)))
            {
                error("slide", "must be longer than 0 and divide the window".into());
            }
            if event.gap.is_some() && event.slide.is_some() {
                error("slide", "session windows do not slide".into());
            }
            if event.timestamp.is_some() && event.time_field.is_some() {
                error("time_field", "give a `timestamp` function or a `time_field`, not both".into());
            }
        }
        let state_timeout = match op {
            StageOp::MapWithState(m) => m.state_timeout,
            _ => None,
        };
        if state_timeout.is_some_and(|t| t.as_millis() == 0) {
            error("state_timeout", "must be at least 1ms".into());
        }
        if call.timeout.is_some_and(|t| t.as_millis() < 10) {
            error("timeout", "must be at least 10ms (deadlines are checked every 10ms)".into());
        }
        let window = op.batch_window().unwrap_or_default();
        let (window, slide) = match event {
            Some(event) => (event.window, event.slide),
            None => (window.window, window.slide),
        };
        for (field, value, max, text) in [
            ("window", window, MAX_SPAN, MAX_SPAN_TEXT),
            ("slide", slide, MAX_SPAN, MAX_SPAN_TEXT),
            ("gap", event.and_then(|e| e.gap), MAX_SPAN, MAX_SPAN_TEXT),
            ("allowed_lateness", event.and_then(|e| e.allowed_lateness), MAX_SPAN, MAX_SPAN_TEXT),
            ("state_timeout", state_timeout, MAX_SPAN, MAX_SPAN_TEXT),
            ("timeout", call.timeout, MAX_INTERVAL, MAX_INTERVAL_TEXT),
        ] {
            if let Some(value) = value.filter(|v| *v > max) {
                error(field, too_long(value, text));
            }
        }
        if call.memory_limit.is_some_and(|m| m < 1 << 16) {
            error("memory_limit", "must be at least 64KiB (one WebAssembly page)".into());
        }
        let calls_plugin = op.function_kind().is_some() || call.plugin.is_some();
        for (field, set) in [
            ("timeout", call.timeout.is_some()),
            ("memory_limit", call.memory_limit.is_some()),
            ("on_error", call.on_error.is_some()),
            ("dead_letter", call.dead_letter.is_some()),
            ("retries", call.retries.is_some()),
            ("params", call.params.is_some()),
        ] {
            if set && !calls_plugin {
                error(field, format!("op `{name}` calls no plugin; `{field}` applies to plugin calls"));
            }
        }
        match (self.policy(), &call.dead_letter) {
            (OnError::DeadLetter, None) => {
                error("dead_letter", "on_error = \"dead_letter\" needs `dead_letter = \"<sink name>\"`".into())
            }
            (OnError::DeadLetter, Some(sink)) => match c.sinks.iter().find(|s| s.name() == sink) {
                None => error(
                    "dead_letter",
                    format!(
                        "`{sink}` is not a sink (known: {})",
                        c.sinks.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
                    ),
                ),
                Some(target) if target.input().is_some() => error(
                    "dead_letter",
                    format!(
                        "sink `{sink}` writes stream `{}`; a dead-letter sink has no `input`",
                        target.input().unwrap_or_default()
                    ),
                ),
                Some(_) => {}
            },
            (policy, Some(_)) => error(
                "dead_letter",
                format!("only on_error = \"dead_letter\" sends records to a sink, not `{}`", policy.name()),
            ),
            (_, None) => {}
        }
        if call.retries.is_some() && self.policy() != OnError::Retry {
            error("retries", "only on_error = \"retry\" takes `retries`".into());
        }
        if let Some(event) = event {
            for (field, value) in [("window", event.window), ("slide", event.slide), ("gap", event.gap)] {
                if value.is_some_and(|d| !d.is_zero() && d.as_millis() == 0) {
                    error(field, "event time is in ms: must be at least 1ms".into());
                }
            }
        }
        if let StageOp::Repartition(RepartitionConfig { partitions }) = op {
            match *partitions {
                None => error("partitions", "repartition needs `partitions = <n>`".into()),
                Some(0) => error("partitions", "must be at least 1".into()),
                Some(n) if n > MAX_PARTITIONS => {
                    error("partitions", format!("must be at most {MAX_PARTITIONS}, found {n}"))
                }
                Some(_) => {}
            }
        }
        let batch = c.pipeline.batch_interval;
        if let Some(WindowConfig { window, slide }) = op.batch_window() {
            let multiple = |field: &str, d: Duration, error: &mut dyn FnMut(&str, String)| {
                if d.is_zero() || batch.is_zero() || !d.as_nanos().is_multiple_of(batch.as_nanos()) {
                    error(
                        field,
                        format!(
                            "must be a multiple of batch_interval ({}), found {}",
                            humantime::format_duration(batch),
                            humantime::format_duration(d)
                        ),
                    );
                }
            };
            match window {
                None => error("window", format!("op `{name}` needs `window = \"<duration>\"`")),
                Some(window) => multiple("window", window, &mut error),
            }
            if let Some(slide) = slide {
                multiple("slide", slide, &mut error);
                if let Some(window) = window
                    && slide > window
                {
                    error("slide", "must not be longer than the window".into());
                }
            }
        }
    }

    /// The error policy in effect: `on_error`, or `dead_letter` when only `dead_letter` is set.
    pub(crate) fn policy(&self) -> OnError {
        let call = self.call();
        match (call.on_error, &call.dead_letter) {
            (Some(policy), _) => policy,
            (None, Some(_)) => OnError::DeadLetter,
            (None, None) => OnError::Fail,
        }
    }
}

/// Which keys a join keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JoinHow {
    /// Keys on both sides: `(K, (V, W))`.
    #[default]
    Inner,
    /// Every left key: `(K, (V, Option<W>))`.
    Left,
    /// Every right key: `(K, (Option<V>, W))`.
    Right,
    /// Every key: `(K, (Option<V>, Option<W>))`.
    Full,
}

/// What a stage does when a plugin call fails (`on_error`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OnError {
    /// The batch fails: no output of it is written, stage state stays as before the batch; the
    /// next batch runs.
    #[default]
    Fail,
    /// Call again (`retries` times, default 2, with a fresh instance), then fail.
    Retry,
    /// Drop the failing partition's records (counted and logged); the batch goes on.
    Skip,
    /// Send the failing partition's records with the error to the `dead_letter` sink; the batch
    /// goes on.
    DeadLetter,
}

impl OnError {
    /// The name used in pipeline files.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Retry => "retry",
            Self::Skip => "skip",
            Self::DeadLetter => "dead_letter",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "[pipeline]\nname = \"t\"\n[[sources]]\nname = \"lines\"\ntype = \"socket\"\naddress = \"127.0.0.1:9\"\n";

    /// The error of reading a file whose one stage is `stage`.
    fn refused(stage: &str) -> String {
        let text = format!("{HEAD}[[stages]]\nname = \"s\"\n{stage}\n");
        let error = toml::from_str::<PipelineConfig>(&text).unwrap_err();
        crate::fields::toml_error(&text, &error)
    }

    fn read(stage: &str) -> StageConfig {
        let text = format!("{HEAD}[[stages]]\nname = \"s\"\n{stage}\n");
        toml::from_str::<PipelineConfig>(&text).unwrap().stages.remove(0)
    }

    #[test]
    fn a_field_of_another_op_is_refused_naming_the_op_and_the_ops_that_take_it() {
        let shown = refused("input = \"lines\"\nop = \"map\"\nplugin = \"p\"\nfunction = \"f\"\ngap = \"5s\"");
        assert!(shown.contains("stages `s`.gap: op `map` takes no `gap` (event_window does); it takes `name`, `op`, `input`, `plugin`, `function`,"), "{shown}");
        assert!(shown.starts_with("TOML parse error at line 7"), "the stage's table is shown: {shown}");
        let shown = refused("input = \"lines\"\nop = \"count\"\nplugin = \"p\"");
        assert!(shown.contains("stages `s`.plugin: op `count` takes no `plugin` (map, flat_map,"), "{shown}");
        let shown = refused("inputs = [\"lines\"]\nop = \"map\"");
        assert!(shown.contains("stages `s`.inputs: op `map` takes no `inputs` (union, join, cogroup do)"), "{shown}");
        let shown = refused("input = \"lines\"\nop = \"window\"\nwindow = \"2s\"\ninverse = \"f\"");
        assert!(shown.contains("op `window` takes no `inverse` (reduce_by_key_and_window does)"), "{shown}");
    }

    #[test]
    fn a_field_no_op_takes_and_an_unknown_op_are_refused() {
        let shown = refused("input = \"lines\"\nop = \"count\"\nwindw = \"2s\"");
        assert!(
            shown.contains("stages `s`.windw: unknown field `windw`, expected one of `name`, `op`, `input`"),
            "{shown}"
        );
        let shown = refused("input = \"lines\"\nop = \"flatmap\"");
        assert!(shown.contains("unknown variant `flatmap`, expected one of `map`, `flat_map`"), "{shown}");
        assert!(refused("input = \"lines\"").contains("stages `s`: missing field `op`"));
    }

    #[test]
    fn a_bad_value_names_the_stage_and_the_field() {
        let shown = refused("input = \"lines\"\nop = \"window\"\nwindow = \"1 parsec\"");
        assert!(shown.contains("stages `s`.window: invalid duration \"1 parsec\""), "{shown}");
        let shown =
            refused("input = \"lines\"\nop = \"map\"\nplugin = \"p\"\nfunction = \"f\"\non_error = \"explode\"");
        assert!(shown.contains("stages `s`.on_error: unknown variant `explode`"), "{shown}");
        let shown = refused("input = \"lines\"\nop = \"repartition\"\npartitions = \"many\"");
        assert!(shown.contains("stages `s`.partitions: invalid type"), "{shown}");
        let shown = refused("input = 3\nop = \"count\"");
        assert!(shown.contains("stages `s`.input: invalid type"), "{shown}");
    }

    #[test]
    fn each_op_reads_into_its_own_struct() {
        let stage = read(
            "input = \"lines\"\nop = \"reduce_by_key_and_window\"\nplugin = \"p\"\nfunction = \"sum\"\ninverse = \"sub\"\nwindow = \"4s\"\non_error = \"skip\"",
        );
        assert_eq!(stage.input_names(), ["lines"]);
        assert_eq!(stage.functions().collect::<Vec<_>>(), ["sum", "sub"]);
        assert_eq!(stage.policy(), OnError::Skip);
        let StageOp::ReduceByKeyAndWindow(own) = &stage.op else { panic!("{stage:?}") };
        assert_eq!((own.window, own.slide), (Some(Duration::from_secs(4)), None));
        let stage = read("inputs = [\"a\", \"b\"]\nop = \"join\"\nhow = \"left\"");
        assert_eq!((stage.input_names(), stage.call.is_none()), (vec!["a", "b"], true));
        assert_eq!(stage.op, StageOp::Join(JoinConfig { how: Some(JoinHow::Left) }));
        let stage = read("input = \"lines\"\nop = \"event_window\"\ngap = \"30s\"");
        assert_eq!((stage.plugin(), stage.call.is_some()), (None, true));
        // Every op reads, with only `name`, `op` and its input.
        for op in OPS {
            let input = if arity(op) == Arity::One { "input = \"a\"" } else { "inputs = [\"a\"]" };
            assert_eq!(read(&format!("{input}\nop = \"{op}\"")).op.name(), *op);
        }
    }
}
