//! The part of a database schema (RFC 7047 section 3.2) the client needs: which tables and
//! columns exist, and each column's type, to apply `update2` diffs and fill default values.

use std::collections::BTreeMap;

use serde_json::Value;

use super::datum::{short, Atom, Datum, Uuid};
use super::error::{OvsdbError, Result};

/// An atomic type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomicType {
    /// `integer`
    Integer,
    /// `real`
    Real,
    /// `boolean`
    Boolean,
    /// `string`
    String,
    /// `uuid`
    Uuid,
}

impl AtomicType {
    fn parse(value: &Value, what: &str) -> Result<Self> {
        let name = match value {
            Value::String(s) => s.as_str(),
            Value::Object(o) => o.get("type").and_then(Value::as_str).unwrap_or_default(),
            _ => "",
        };
        Ok(match name {
            "integer" => AtomicType::Integer,
            "real" => AtomicType::Real,
            "boolean" => AtomicType::Boolean,
            "string" => AtomicType::String,
            "uuid" => AtomicType::Uuid,
            _ => {
                return Err(OvsdbError::invalid(
                    what,
                    format!("unknown base type {}", short(value)),
                ))
            }
        })
    }

    fn default_atom(self) -> Atom {
        match self {
            AtomicType::Integer => Atom::Integer(0),
            AtomicType::Real => Atom::Real(0.0),
            AtomicType::Boolean => Atom::Boolean(false),
            AtomicType::String => Atom::String(String::new()),
            AtomicType::Uuid => Atom::Uuid(Uuid::nil()),
        }
    }
}

/// A column type: key, optional value (maps), and element bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    /// The key (or only) atomic type.
    pub key: AtomicType,
    /// The value type, for maps.
    pub value: Option<AtomicType>,
    /// Minimum number of elements.
    pub min: u64,
    /// Maximum number of elements; `None` is unlimited.
    pub max: Option<u64>,
}

impl ColumnType {
    /// Parses a `<type>` from a schema.
    pub fn from_json(value: &Value, what: &str) -> Result<Self> {
        match value {
            Value::String(_) => Ok(ColumnType {
                key: AtomicType::parse(value, what)?,
                value: None,
                min: 1,
                max: Some(1),
            }),
            Value::Object(o) => {
                let key = o
                    .get("key")
                    .ok_or_else(|| OvsdbError::invalid(what, "column type without key"))?;
                let min = match o.get("min") {
                    None => 1,
                    Some(v) => v
                        .as_u64()
                        .ok_or_else(|| OvsdbError::invalid(what, format!("bad min {v}")))?,
                };
                let max = match o.get("max") {
                    None => Some(1),
                    Some(Value::String(s)) if s == "unlimited" => None,
                    Some(v) => Some(
                        v.as_u64()
                            .ok_or_else(|| OvsdbError::invalid(what, format!("bad max {v}")))?,
                    ),
                };
                Ok(ColumnType {
                    key: AtomicType::parse(key, what)?,
                    value: o
                        .get("value")
                        .map(|v| AtomicType::parse(v, what))
                        .transpose()?,
                    min,
                    max,
                })
            }
            _ => Err(OvsdbError::invalid(
                what,
                format!("unexpected column type {}", short(value)),
            )),
        }
    }

    /// A composite column can hold more than one element. `update2` sends a diff only for
    /// these; other columns (scalars and optional values) get their new value, as ovsdb-server's
    /// `ovsdb_datum_diff` does.
    pub fn is_composite(&self) -> bool {
        self.max != Some(1)
    }

    /// True for map columns.
    pub fn is_map(&self) -> bool {
        self.value.is_some()
    }

    /// The default value of the column (what `update2` omits on insert).
    pub fn default_datum(&self) -> Datum {
        if self.is_map() {
            Datum::empty_map()
        } else if self.min == 0 {
            Datum::empty()
        } else {
            Datum::set([self.key.default_atom()])
        }
    }
}

/// Tables and column types of one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSchema {
    /// Database name.
    pub name: String,
    /// Schema version.
    pub version: String,
    /// Table name to column name to type.
    pub tables: BTreeMap<String, BTreeMap<String, ColumnType>>,
}

impl DbSchema {
    /// Parses the result of `get_schema`.
    pub fn from_json(value: &Value) -> Result<Self> {
        let tables = value
            .get("tables")
            .and_then(Value::as_object)
            .ok_or_else(|| OvsdbError::invalid("schema", "no tables object"))?;
        let mut out = BTreeMap::new();
        for (table, spec) in tables {
            let columns = spec
                .get("columns")
                .and_then(Value::as_object)
                .ok_or_else(|| OvsdbError::invalid(format!("table {table}"), "no columns"))?;
            let mut cols = BTreeMap::new();
            for (column, col) in columns {
                let what = format!("column {table}.{column}");
                let ty = col
                    .get("type")
                    .ok_or_else(|| OvsdbError::invalid(what.as_str(), "no type"))?;
                cols.insert(column.clone(), ColumnType::from_json(ty, &what)?);
            }
            out.insert(table.clone(), cols);
        }
        Ok(DbSchema {
            name: value
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            version: value
                .get("version")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            tables: out,
        })
    }

    /// The type of `table.column`, if the schema has it.
    pub fn column(&self, table: &str, column: &str) -> Option<&ColumnType> {
        self.tables.get(table)?.get(column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_column_types() {
        let schema = DbSchema::from_json(&json!({
            "name": "Open_vSwitch", "version": "8.3.1",
            "tables": {"Interface": {"columns": {
                "name": {"type": "string"},
                "ofport": {"type": {"key": "integer", "min": 0, "max": 1}},
                "ofport_request": {"type": {"key": {"type": "integer", "minInteger": 1, "maxInteger": 65279}, "min": 0, "max": 1}},
                "options": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
                "admin_state": {"type": {"key": {"type": "string", "enum": ["set", ["up", "down"]]}, "min": 0, "max": 1}},
                "flag": {"type": "boolean"}
            }}}
        }))
        .unwrap();
        assert_eq!(schema.version, "8.3.1");
        let name = schema.column("Interface", "name").unwrap();
        assert!(!name.is_composite());
        assert_eq!(name.default_datum(), Datum::from(""));
        let ofport = schema.column("Interface", "ofport").unwrap();
        assert!(!ofport.is_composite());
        assert!(schema
            .column("Interface", "options")
            .unwrap()
            .is_composite());
        assert_eq!(ofport.default_datum(), Datum::empty());
        assert!(schema.column("Interface", "options").unwrap().is_map());
        assert_eq!(schema.column("Interface", "options").unwrap().max, None);
        assert_eq!(
            schema.column("Interface", "flag").unwrap().default_datum(),
            Datum::from(false)
        );
        assert!(schema.column("Interface", "nope").is_none());
    }

    #[test]
    fn rejects_bad_schema() {
        assert!(DbSchema::from_json(&json!({})).is_err());
        assert!(DbSchema::from_json(
            &json!({"tables": {"T": {"columns": {"c": {"type": "blob"}}}}})
        )
        .is_err());
        assert!(DbSchema::from_json(
            &json!({"tables": {"T": {"columns": {"c": {"type": {"min": 0}}}}}})
        )
        .is_err());
    }
}
