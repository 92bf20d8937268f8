//! OVSDB values (RFC 7047 section 5.1): UUIDs, atoms, data (sets and maps) and rows, with their
//! JSON forms.
//!
//! A [`Datum`] is always a set or a map; a column holding one atom is a one-element set. Sets and
//! maps are kept sorted, so two data compare equal exactly when OVSDB considers them equal.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{json, Value};

use super::error::{OvsdbError, Result};

/// A row UUID in its canonical text form (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lower case).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uuid(String);

impl Uuid {
    /// Parses a UUID, accepting either case and normalising to lower case.
    pub fn parse(text: &str) -> Result<Self> {
        let bytes = text.as_bytes();
        let ok = bytes.len() == 36
            && bytes.iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        if !ok {
            return Err(OvsdbError::invalid(
                "uuid",
                format!("{text:?} is not a uuid"),
            ));
        }
        Ok(Uuid(text.to_ascii_lowercase()))
    }

    /// The all-zero UUID (the default of a `uuid` scalar column).
    pub fn nil() -> Self {
        Uuid("00000000-0000-0000-0000-000000000000".to_owned())
    }

    /// The canonical text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The JSON form `["uuid", "..."]`.
    pub fn to_json(&self) -> Value {
        json!(["uuid", self.0])
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One OVSDB atom. `NamedUuid` only appears in requests: it names a row inserted earlier in the
/// same transaction (`["named-uuid", name]`).
#[derive(Debug, Clone)]
pub enum Atom {
    /// An integer.
    Integer(i64),
    /// A real.
    Real(f64),
    /// A boolean.
    Boolean(bool),
    /// A string.
    String(String),
    /// A row reference.
    Uuid(Uuid),
    /// A reference to a row inserted in the same transaction under this `uuid-name`.
    NamedUuid(String),
}

impl Atom {
    fn rank(&self) -> u8 {
        match self {
            Atom::Integer(_) => 0,
            Atom::Real(_) => 1,
            Atom::Boolean(_) => 2,
            Atom::String(_) => 3,
            Atom::Uuid(_) => 4,
            Atom::NamedUuid(_) => 5,
        }
    }

    /// The JSON form of the atom.
    pub fn to_json(&self) -> Value {
        match self {
            Atom::Integer(i) => json!(i),
            Atom::Real(r) => serde_json::Number::from_f64(*r).map_or(Value::Null, Value::Number),
            Atom::Boolean(b) => json!(b),
            Atom::String(s) => json!(s),
            Atom::Uuid(u) => u.to_json(),
            Atom::NamedUuid(n) => json!(["named-uuid", n]),
        }
    }

    /// Reads an atom from its JSON form.
    pub fn from_json(value: &Value) -> Result<Self> {
        match value {
            Value::Bool(b) => Ok(Atom::Boolean(*b)),
            Value::String(s) => Ok(Atom::String(s.clone())),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Ok(Atom::Integer(i)),
                None => n
                    .as_f64()
                    .map(Atom::Real)
                    .ok_or_else(|| OvsdbError::invalid("atom", format!("number {n} out of range"))),
            },
            Value::Array(items) => match items.as_slice() {
                [Value::String(tag), Value::String(text)] if tag == "uuid" => {
                    Ok(Atom::Uuid(Uuid::parse(text)?))
                }
                [Value::String(tag), Value::String(text)] if tag == "named-uuid" => {
                    Ok(Atom::NamedUuid(text.clone()))
                }
                _ => Err(OvsdbError::invalid(
                    "atom",
                    format!("unexpected array {}", short(value)),
                )),
            },
            _ => Err(OvsdbError::invalid(
                "atom",
                format!("unexpected {}", short(value)),
            )),
        }
    }

    /// The string, if this is a string atom.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an integer atom.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Atom::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The UUID, if this is a UUID atom.
    pub fn as_uuid(&self) -> Option<&Uuid> {
        match self {
            Atom::Uuid(u) => Some(u),
            _ => None,
        }
    }
}

impl Ord for Atom {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Atom::Integer(a), Atom::Integer(b)) => a.cmp(b),
            (Atom::Real(a), Atom::Real(b)) => a.total_cmp(b),
            (Atom::Boolean(a), Atom::Boolean(b)) => a.cmp(b),
            (Atom::String(a), Atom::String(b)) => a.cmp(b),
            (Atom::Uuid(a), Atom::Uuid(b)) => a.cmp(b),
            (Atom::NamedUuid(a), Atom::NamedUuid(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Atom {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Atom {}

impl From<&str> for Atom {
    fn from(s: &str) -> Self {
        Atom::String(s.to_owned())
    }
}
impl From<String> for Atom {
    fn from(s: String) -> Self {
        Atom::String(s)
    }
}
impl From<&String> for Atom {
    fn from(s: &String) -> Self {
        Atom::String(s.clone())
    }
}
impl From<i64> for Atom {
    fn from(i: i64) -> Self {
        Atom::Integer(i)
    }
}
impl From<bool> for Atom {
    fn from(b: bool) -> Self {
        Atom::Boolean(b)
    }
}
impl From<Uuid> for Atom {
    fn from(u: Uuid) -> Self {
        Atom::Uuid(u)
    }
}
impl From<&Uuid> for Atom {
    fn from(u: &Uuid) -> Self {
        Atom::Uuid(u.clone())
    }
}

/// A column value: a set of atoms (one atom is a one-element set) or a map of atom pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    /// A set; also the form of a plain atom (one element) and of an absent optional value.
    Set(BTreeSet<Atom>),
    /// A map.
    Map(BTreeMap<Atom, Atom>),
}

impl Default for Datum {
    fn default() -> Self {
        Datum::empty()
    }
}

impl Datum {
    /// The empty set (also "no value" for an optional column).
    pub fn empty() -> Self {
        Datum::Set(BTreeSet::new())
    }

    /// The empty map.
    pub fn empty_map() -> Self {
        Datum::Map(BTreeMap::new())
    }

    /// A set of the given atoms.
    pub fn set<A: Into<Atom>>(items: impl IntoIterator<Item = A>) -> Self {
        Datum::Set(items.into_iter().map(Into::into).collect())
    }

    /// A map of the given pairs.
    pub fn map<K: Into<Atom>, V: Into<Atom>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Datum::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// A one-element set if `value` is `Some`, else the empty set.
    pub fn optional<A: Into<Atom>>(value: Option<A>) -> Self {
        Datum::set(value)
    }

    /// A reference to a row inserted earlier in the same transaction.
    pub fn named_uuid(name: &str) -> Self {
        Datum::set([Atom::NamedUuid(name.to_owned())])
    }

    /// The JSON form: a bare atom for a one-element set, else `["set", [...]]` / `["map", [...]]`.
    pub fn to_json(&self) -> Value {
        match self {
            Datum::Set(items) if items.len() == 1 => {
                items.first().map_or(Value::Null, Atom::to_json)
            }
            Datum::Set(items) => {
                json!(["set", items.iter().map(Atom::to_json).collect::<Vec<_>>()])
            }
            Datum::Map(pairs) => json!([
                "map",
                pairs
                    .iter()
                    .map(|(k, v)| json!([k.to_json(), v.to_json()]))
                    .collect::<Vec<_>>()
            ]),
        }
    }

    /// Reads a datum from its JSON form.
    pub fn from_json(value: &Value) -> Result<Self> {
        if let Value::Array(items) = value {
            match items.as_slice() {
                [Value::String(tag), Value::Array(elems)] if tag == "set" => {
                    return elems
                        .iter()
                        .map(Atom::from_json)
                        .collect::<Result<BTreeSet<_>>>()
                        .map(Datum::Set);
                }
                [Value::String(tag), Value::Array(pairs)] if tag == "map" => {
                    return pairs
                        .iter()
                        .map(|pair| match pair.as_array().map(Vec::as_slice) {
                            Some([k, v]) => Ok((Atom::from_json(k)?, Atom::from_json(v)?)),
                            _ => Err(OvsdbError::invalid(
                                "map pair",
                                format!("expected [key, value], got {}", short(pair)),
                            )),
                        })
                        .collect::<Result<BTreeMap<_, _>>>()
                        .map(Datum::Map);
                }
                _ => {}
            }
        }
        Ok(Datum::set([Atom::from_json(value)?]))
    }

    /// Number of elements (set) or pairs (map).
    pub fn len(&self) -> usize {
        match self {
            Datum::Set(s) => s.len(),
            Datum::Map(m) => m.len(),
        }
    }

    /// True for the empty set or map.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The single atom of a one-element set.
    pub fn as_atom(&self) -> Option<&Atom> {
        match self {
            Datum::Set(s) if s.len() == 1 => s.first(),
            _ => None,
        }
    }

    /// The single string of a one-element set.
    pub fn as_str(&self) -> Option<&str> {
        self.as_atom().and_then(Atom::as_str)
    }

    /// The single integer of a one-element set.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_atom().and_then(Atom::as_i64)
    }

    /// The single boolean of a one-element set.
    pub fn as_bool(&self) -> Option<bool> {
        match self.as_atom() {
            Some(Atom::Boolean(b)) => Some(*b),
            _ => None,
        }
    }

    /// The single UUID of a one-element set.
    pub fn as_uuid(&self) -> Option<&Uuid> {
        self.as_atom().and_then(Atom::as_uuid)
    }

    /// The UUIDs in a set (other atoms are skipped).
    pub fn uuids(&self) -> Vec<Uuid> {
        match self {
            Datum::Set(s) => s.iter().filter_map(Atom::as_uuid).cloned().collect(),
            Datum::Map(_) => Vec::new(),
        }
    }

    /// The strings in a set (other atoms are skipped).
    pub fn strings(&self) -> Vec<String> {
        match self {
            Datum::Set(s) => s
                .iter()
                .filter_map(Atom::as_str)
                .map(str::to_owned)
                .collect(),
            Datum::Map(_) => Vec::new(),
        }
    }

    /// The string-to-string pairs of a map (other pairs are skipped).
    pub fn to_string_map(&self) -> BTreeMap<String, String> {
        match self {
            Datum::Map(m) => m
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                .collect(),
            Datum::Set(_) => BTreeMap::new(),
        }
    }

    /// Applies an `update2` "modify" diff (ovsdb-server(7)). With `replace` (columns holding at
    /// most one element) the diff is the new value. Otherwise a set toggles each element of the
    /// diff; a map adds absent keys, removes keys whose value is equal, and replaces keys whose
    /// value differs.
    pub fn apply_diff(&mut self, diff: Datum, replace: bool) -> Result<()> {
        if replace {
            *self = diff;
            return Ok(());
        }
        if self.is_empty() {
            // An empty value arrives as `["set", []]` even for maps; adopt the diff's shape.
            if let (Datum::Set(_), Datum::Map(_)) = (&*self, &diff) {
                *self = Datum::empty_map();
            }
        }
        match (self, diff) {
            (Datum::Set(current), Datum::Set(toggle)) => {
                for atom in toggle {
                    if !current.remove(&atom) {
                        current.insert(atom);
                    }
                }
                Ok(())
            }
            (Datum::Map(current), Datum::Map(changes)) => {
                for (key, value) in changes {
                    match current.get(&key) {
                        Some(old) if *old == value => {
                            current.remove(&key);
                        }
                        _ => {
                            current.insert(key, value);
                        }
                    }
                }
                Ok(())
            }
            (Datum::Map(_), Datum::Set(s)) if s.is_empty() => Ok(()),
            (current, diff) => Err(OvsdbError::invalid(
                "update2 diff",
                format!(
                    "cannot apply {} to {}",
                    short(&diff.to_json()),
                    short(&current.to_json())
                ),
            )),
        }
    }
}

impl<T: Into<Atom>> From<T> for Datum {
    fn from(value: T) -> Self {
        Datum::set([value.into()])
    }
}

/// A row: column name to value. Used for rows read back (select, monitor cache) and for rows
/// written (insert, update).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row(BTreeMap<String, Datum>);

impl Row {
    /// An empty row.
    pub fn new() -> Self {
        Row::default()
    }

    /// Builder: sets `column` to `value`.
    pub fn with(mut self, column: &str, value: impl Into<Datum>) -> Self {
        self.set(column, value);
        self
    }

    /// Sets `column` to `value`.
    pub fn set(&mut self, column: &str, value: impl Into<Datum>) {
        self.0.insert(column.to_owned(), value.into());
    }

    /// The value of `column`, if present.
    pub fn get(&self, column: &str) -> Option<&Datum> {
        self.0.get(column)
    }

    /// Mutable access to the value of `column`.
    pub fn get_mut(&mut self, column: &str) -> Option<&mut Datum> {
        self.0.get_mut(column)
    }

    /// Removes `column`, returning its value.
    pub fn remove(&mut self, column: &str) -> Option<Datum> {
        self.0.remove(column)
    }

    /// The single string in `column`.
    pub fn get_str(&self, column: &str) -> Option<&str> {
        self.get(column).and_then(Datum::as_str)
    }

    /// The single integer in `column`.
    pub fn get_i64(&self, column: &str) -> Option<i64> {
        self.get(column).and_then(Datum::as_i64)
    }

    /// The single boolean in `column`.
    pub fn get_bool(&self, column: &str) -> Option<bool> {
        self.get(column).and_then(Datum::as_bool)
    }

    /// The single UUID in `column` (e.g. `_uuid`).
    pub fn get_uuid(&self, column: &str) -> Option<&Uuid> {
        self.get(column).and_then(Datum::as_uuid)
    }

    /// The UUIDs in a reference-set `column`; empty if absent.
    pub fn get_uuids(&self, column: &str) -> Vec<Uuid> {
        self.get(column).map(Datum::uuids).unwrap_or_default()
    }

    /// The strings in a string-set `column`; empty if absent.
    pub fn get_strings(&self, column: &str) -> Vec<String> {
        self.get(column).map(Datum::strings).unwrap_or_default()
    }

    /// The string map in `column` (e.g. `external_ids`); empty if absent.
    pub fn get_map(&self, column: &str) -> BTreeMap<String, String> {
        self.get(column)
            .map(Datum::to_string_map)
            .unwrap_or_default()
    }

    /// Iterates over (column, value).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Datum)> {
        self.0.iter()
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The JSON object form.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        )
    }

    /// Reads a row from a JSON object.
    pub fn from_json(value: &Value) -> Result<Self> {
        let object = value.as_object().ok_or_else(|| {
            OvsdbError::invalid("row", format!("expected object, got {}", short(value)))
        })?;
        object
            .iter()
            .map(|(column, v)| {
                Datum::from_json(v)
                    .map(|d| (column.clone(), d))
                    .map_err(|e| OvsdbError::invalid(format!("column {column}"), e.to_string()))
            })
            .collect::<Result<BTreeMap<_, _>>>()
            .map(Row)
    }
}

impl FromIterator<(String, Datum)> for Row {
    fn from_iter<I: IntoIterator<Item = (String, Datum)>>(iter: I) -> Self {
        Row(iter.into_iter().collect())
    }
}

/// A short rendering of a JSON value for error messages (bounded length).
pub(crate) fn short(value: &Value) -> String {
    let mut text = value.to_string();
    if text.len() > 120 {
        let mut cut = 117;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "1a1a1a1a-0000-4000-8000-000000000001";
    const U2: &str = "2b2b2b2b-0000-4000-8000-000000000002";

    #[test]
    fn uuid_parse_validates_and_lowercases() {
        assert_eq!(Uuid::parse(&U1.to_uppercase()).unwrap().as_str(), U1);
        assert!(Uuid::parse("not-a-uuid").is_err());
        assert!(Uuid::parse("1a1a1a1a-0000-4000-8000-00000000000g").is_err());
        assert!(Uuid::parse("1a1a1a1a00000-4000-8000-000000000001").is_err());
    }

    #[test]
    fn atom_json_round_trip() {
        for v in [
            json!(5),
            json!(-1),
            json!(1.5),
            json!(true),
            json!("x"),
            json!(["uuid", U1]),
            json!(["named-uuid", "row1"]),
        ] {
            assert_eq!(Atom::from_json(&v).unwrap().to_json(), v, "{v}");
        }
        assert!(Atom::from_json(&json!(null)).is_err());
        assert!(Atom::from_json(&json!(["uuid", "bad"])).is_err());
        assert!(Atom::from_json(&json!(["other", U1])).is_err());
        assert!(Atom::from_json(&json!({"a": 1})).is_err());
    }

    #[test]
    fn datum_json_forms() {
        let one = Datum::from_json(&json!("a")).unwrap();
        assert_eq!(one, Datum::from("a"));
        assert_eq!(one.to_json(), json!("a"));

        let set = Datum::from_json(&json!(["set", [["uuid", U2], ["uuid", U1]]])).unwrap();
        assert_eq!(set.uuids().len(), 2);
        assert_eq!(set.to_json(), json!(["set", [["uuid", U1], ["uuid", U2]]]));

        let single_in_set = Datum::from_json(&json!(["set", [7]])).unwrap();
        assert_eq!(single_in_set.as_i64(), Some(7));
        assert_eq!(single_in_set.to_json(), json!(7));

        let empty = Datum::from_json(&json!(["set", []])).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.to_json(), json!(["set", []]));

        let map = Datum::from_json(&json!(["map", [["b", "2"], ["a", "1"]]])).unwrap();
        assert_eq!(map.to_json(), json!(["map", [["a", "1"], ["b", "2"]]]));
        assert_eq!(map.to_string_map().get("a").map(String::as_str), Some("1"));

        assert!(Datum::from_json(&json!(["map", [["a"]]])).is_err());
        assert!(Datum::from_json(&json!(["map", "x"])).is_err());
        assert!(Datum::from_json(&json!(["set", [null]])).is_err());
    }

    #[test]
    fn datum_constructors() {
        assert_eq!(Datum::optional(None::<i64>), Datum::empty());
        assert_eq!(Datum::optional(Some(3)).as_i64(), Some(3));
        assert_eq!(Datum::named_uuid("p").to_json(), json!(["named-uuid", "p"]));
        assert_eq!(
            Datum::map([("k", "v")]).to_json(),
            json!(["map", [["k", "v"]]])
        );
        assert_eq!(Datum::set(["OpenFlow15"]).to_json(), json!("OpenFlow15"));
    }

    #[test]
    fn set_diff_toggles() {
        let mut d = Datum::set([1i64, 2]);
        d.apply_diff(Datum::set([2i64, 3]), false).unwrap();
        assert_eq!(d, Datum::set([1i64, 3]));
        let mut empty = Datum::empty();
        empty.apply_diff(Datum::from(5i64), false).unwrap();
        assert_eq!(empty.as_i64(), Some(5));
    }

    #[test]
    fn single_valued_diff_replaces() {
        let mut d = Datum::from("a");
        d.apply_diff(Datum::from("b"), true).unwrap();
        assert_eq!(d.as_str(), Some("b"));
        // optional column (what ovsdb-server 3.1 sends for mtu 1450 -> 1400 -> unset)
        let mut mtu = Datum::from(1450i64);
        mtu.apply_diff(Datum::from(1400i64), true).unwrap();
        assert_eq!(mtu.as_i64(), Some(1400));
        mtu.apply_diff(Datum::empty(), true).unwrap();
        assert!(mtu.is_empty());
    }

    #[test]
    fn map_diff_adds_removes_replaces() {
        let mut d = Datum::map([("keep", "1"), ("drop", "2"), ("change", "3")]);
        d.apply_diff(
            Datum::map([("drop", "2"), ("change", "33"), ("new", "4")]),
            false,
        )
        .unwrap();
        assert_eq!(
            d,
            Datum::map([("keep", "1"), ("change", "33"), ("new", "4")])
        );
        // empty map transmitted as an empty set, then a map diff arrives
        let mut e = Datum::empty();
        e.apply_diff(Datum::map([("a", "b")]), false).unwrap();
        assert_eq!(e, Datum::map([("a", "b")]));
    }

    #[test]
    fn mismatched_diff_is_an_error() {
        let mut d = Datum::map([("a", "b")]);
        assert!(d.apply_diff(Datum::set(["x"]), false).is_err());
    }

    #[test]
    fn row_accessors() {
        let row = Row::from_json(&json!({
            "name": "p0",
            "ofport": ["set", []],
            "mtu_request": 1450,
            "interfaces": ["set", [["uuid", U1]]],
            "external_ids": ["map", [["owner", "weft"]]],
            "protocols": ["set", ["OpenFlow13", "OpenFlow15"]],
            "up": true
        }))
        .unwrap();
        assert_eq!(row.get_str("name"), Some("p0"));
        assert_eq!(row.get_i64("ofport"), None);
        assert_eq!(row.get_i64("mtu_request"), Some(1450));
        assert_eq!(row.get_uuids("interfaces"), vec![Uuid::parse(U1).unwrap()]);
        assert_eq!(row.get_map("external_ids")["owner"], "weft");
        assert_eq!(row.get_strings("protocols").len(), 2);
        assert_eq!(row.get_bool("up"), Some(true));
        assert!(Row::from_json(&json!([1])).is_err());
        let err = Row::from_json(&json!({"bad": {"x": 1}})).unwrap_err();
        assert!(err.to_string().contains("column bad"), "{err}");
    }

    #[test]
    fn short_truncates_on_char_boundary() {
        let long = json!("é".repeat(200));
        let s = short(&long);
        assert!(s.len() <= 120);
        assert!(s.ends_with("..."));
    }
}
