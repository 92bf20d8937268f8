//! The local replica of monitored tables, fed by `monitor_cond` / `update2` (ovsdb-server(7)).
//!
//! Pure data: the client applies the initial snapshot with [`Cache::reset`] and every
//! notification with [`Cache::apply_update2`]. Rows always hold every monitored column: values
//! `update2` omits because they are the default are filled in from the schema.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::datum::{short, Row, Uuid};
use super::error::{OvsdbError, Result};
use super::schema::DbSchema;

/// Which columns of which tables to monitor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorSpec {
    tables: BTreeMap<String, Vec<String>>,
}

impl MonitorSpec {
    /// Monitor nothing (the client then only serves RPCs).
    pub fn none() -> Self {
        MonitorSpec::default()
    }

    /// The tables and columns Weft uses in `Open_vSwitch`, `Bridge`, `Port` and `Interface`.
    /// Counters (`statistics`) and fast-changing `status` columns are left out.
    pub fn weft() -> Self {
        MonitorSpec::none()
            .table(
                "Open_vSwitch",
                &[
                    "bridges",
                    "other_config",
                    "external_ids",
                    "ovs_version",
                    "db_version",
                    "datapath_types",
                    "iface_types",
                    "next_cfg",
                    "cur_cfg",
                ],
            )
            .table(
                "Bridge",
                &[
                    "name",
                    "datapath_type",
                    "datapath_id",
                    "ports",
                    "protocols",
                    "fail_mode",
                    "controller",
                    "other_config",
                    "external_ids",
                ],
            )
            .table(
                "Port",
                &["name", "interfaces", "tag", "other_config", "external_ids"],
            )
            .table(
                "Interface",
                &[
                    "name",
                    "type",
                    "options",
                    "ofport",
                    "ofport_request",
                    "mtu",
                    "mtu_request",
                    "mac_in_use",
                    "ifindex",
                    "admin_state",
                    "link_state",
                    "error",
                    "other_config",
                    "external_ids",
                ],
            )
    }

    /// Builder: also monitor `columns` of `table`.
    pub fn table(mut self, table: &str, columns: &[&str]) -> Self {
        self.tables.insert(
            table.to_owned(),
            columns.iter().map(|c| (*c).to_owned()).collect(),
        );
        self
    }

    /// True if no table is monitored.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Tables and their requested columns.
    pub fn tables(&self) -> &BTreeMap<String, Vec<String>> {
        &self.tables
    }

    /// The `monitor_cond` request object, limited to the columns `schema` has (older schemas
    /// may lack some); a missing table is an error.
    pub fn request(&self, schema: &DbSchema) -> Result<Value> {
        let mut out = serde_json::Map::new();
        for (table, columns) in &self.tables {
            let known = schema
                .tables
                .get(table)
                .ok_or_else(|| OvsdbError::UnknownTable {
                    database: schema.name.clone(),
                    table: table.clone(),
                })?;
            let present: Vec<&String> = columns.iter().filter(|c| known.contains_key(*c)).collect();
            out.insert(table.clone(), json!([{ "columns": present }]));
        }
        Ok(Value::Object(out))
    }
}

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// New row.
    Insert,
    /// Columns changed.
    Modify,
    /// Row removed.
    Delete,
}

/// One row change applied to the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowChange {
    /// Table.
    pub table: String,
    /// Row UUID.
    pub uuid: Uuid,
    /// Kind of change.
    pub kind: ChangeKind,
}

/// Monitored tables: table name to rows by UUID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cache {
    tables: BTreeMap<String, BTreeMap<Uuid, Row>>,
    /// Monitored columns per table (those of the spec the schema has): inserted rows get the
    /// default value for the ones `update2` left out.
    columns: BTreeMap<String, Vec<String>>,
}

impl Cache {
    /// The rows of `table` (empty if not monitored).
    pub fn table(&self, table: &str) -> impl Iterator<Item = (&Uuid, &Row)> {
        self.tables.get(table).into_iter().flatten()
    }

    /// Number of rows in `table`.
    pub fn len(&self, table: &str) -> usize {
        self.tables.get(table).map_or(0, BTreeMap::len)
    }

    /// The row `uuid` of `table`.
    pub fn row(&self, table: &str, uuid: &Uuid) -> Option<&Row> {
        self.tables.get(table)?.get(uuid)
    }

    /// The row of `table` whose `name` column is `name` (Bridge, Port, Interface are indexed by
    /// name).
    pub fn by_name(&self, table: &str, name: &str) -> Option<(&Uuid, &Row)> {
        self.table(table)
            .find(|(_, row)| row.get_str("name") == Some(name))
    }

    /// The single `Open_vSwitch` root row.
    pub fn root(&self) -> Option<(&Uuid, &Row)> {
        self.table("Open_vSwitch").next()
    }

    /// Table names held.
    pub fn tables(&self) -> impl Iterator<Item = &String> {
        self.tables.keys()
    }

    /// Replaces the whole content with the initial snapshot of a `monitor_cond` reply.
    pub fn reset(&mut self, spec: &MonitorSpec, initial: &Value, schema: &DbSchema) -> Result<()> {
        let mut fresh = Cache::default();
        for (table, columns) in spec.tables() {
            fresh.tables.insert(table.clone(), BTreeMap::new());
            let known = schema.tables.get(table);
            fresh.columns.insert(
                table.clone(),
                columns
                    .iter()
                    .filter(|c| known.is_some_and(|k| k.contains_key(*c)))
                    .cloned()
                    .collect(),
            );
        }
        fresh.apply_update2(initial, schema)?;
        *self = fresh;
        Ok(())
    }

    /// Applies `<table-updates2>`; returns the changes made. On error the cache may be partly
    /// updated: the client then drops the connection and resynchronises from scratch.
    pub fn apply_update2(&mut self, updates: &Value, schema: &DbSchema) -> Result<Vec<RowChange>> {
        let updates = updates.as_object().ok_or_else(|| {
            OvsdbError::invalid(
                "table-updates2",
                format!("not an object: {}", short(updates)),
            )
        })?;
        let mut changes = Vec::new();
        for (table, rows) in updates {
            let columns = schema.tables.get(table).ok_or_else(|| {
                OvsdbError::invalid("table-updates2", format!("table {table} not in schema"))
            })?;
            let rows = rows.as_object().ok_or_else(|| {
                OvsdbError::invalid(format!("updates of table {table}"), short(rows))
            })?;
            let monitored = self.columns.get(table);
            let cached = self.tables.entry(table.clone()).or_default();
            for (uuid, update) in rows {
                let uuid = Uuid::parse(uuid)?;
                let what = || format!("update2 of {table} row {uuid}");
                let update = update
                    .as_object()
                    .filter(|o| o.len() == 1)
                    .ok_or_else(|| OvsdbError::invalid(what(), short(update)))?;
                let (kind, body) = update
                    .iter()
                    .next()
                    .ok_or_else(|| OvsdbError::invalid(what(), "empty update"))?;
                let kind = match kind.as_str() {
                    "initial" | "insert" => {
                        let mut row = Row::from_json(body)?;
                        for column in monitored.into_iter().flatten() {
                            if row.get(column).is_none() {
                                if let Some(ty) = columns.get(column) {
                                    row.set(column, ty.default_datum());
                                }
                            }
                        }
                        cached.insert(uuid.clone(), row);
                        ChangeKind::Insert
                    }
                    "modify" => {
                        let diff = Row::from_json(body)?;
                        let row = cached.get_mut(&uuid).ok_or_else(|| {
                            OvsdbError::invalid(what(), "modify of a row not in the cache")
                        })?;
                        for (column, value) in diff.iter() {
                            let ty = columns.get(column).ok_or_else(|| {
                                OvsdbError::invalid(what(), format!("unknown column {column}"))
                            })?;
                            let current = match row.get_mut(column) {
                                Some(current) => current,
                                None => {
                                    row.set(column, ty.default_datum());
                                    row.get_mut(column).ok_or_else(|| {
                                        OvsdbError::invalid(what(), "column vanished")
                                    })?
                                }
                            };
                            current
                                .apply_diff(value.clone(), !ty.is_composite())
                                .map_err(|e| {
                                    OvsdbError::invalid(
                                        format!("{} column {column}", what()),
                                        e.to_string(),
                                    )
                                })?;
                        }
                        ChangeKind::Modify
                    }
                    "delete" => {
                        if cached.remove(&uuid).is_none() {
                            tracing::warn!(%table, %uuid, "ovsdb update2 deletes a row not in the cache");
                        }
                        ChangeKind::Delete
                    }
                    other => {
                        return Err(OvsdbError::invalid(
                            what(),
                            format!("unknown update {other}"),
                        ))
                    }
                };
                changes.push(RowChange {
                    table: table.clone(),
                    uuid,
                    kind,
                });
            }
        }
        Ok(changes)
    }

    /// All rows: table name to rows by UUID.
    pub fn as_map(&self) -> &BTreeMap<String, BTreeMap<Uuid, Row>> {
        &self.tables
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovsdb::datum::Datum;

    const U1: &str = "1a1a1a1a-0000-4000-8000-000000000001";
    const U2: &str = "2b2b2b2b-0000-4000-8000-000000000002";

    fn schema() -> DbSchema {
        DbSchema::from_json(&json!({"name": "Open_vSwitch", "version": "8.3.1", "tables": {
            "Interface": {"columns": {
                "name": {"type": "string"},
                "type": {"type": "string"},
                "ofport": {"type": {"key": "integer", "min": 0, "max": 1}},
                "options": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
                "error": {"type": {"key": "string", "min": 0, "max": 1}}
            }},
            "Port": {"columns": {
                "name": {"type": "string"},
                "interfaces": {"type": {"key": {"type": "uuid", "refTable": "Interface"}, "min": 1, "max": "unlimited"}}
            }}
        }}))
        .unwrap()
    }

    fn spec() -> MonitorSpec {
        MonitorSpec::none()
            .table(
                "Interface",
                &[
                    "name",
                    "type",
                    "ofport",
                    "options",
                    "error",
                    "not_in_schema",
                ],
            )
            .table("Port", &["name", "interfaces"])
    }

    #[test]
    fn monitor_request_filters_unknown_columns() {
        let req = spec().request(&schema()).unwrap();
        assert_eq!(
            req["Interface"],
            json!([{"columns": ["name", "type", "ofport", "options", "error"]}])
        );
        let err = MonitorSpec::none()
            .table("Nope", &["x"])
            .request(&schema())
            .unwrap_err();
        assert!(matches!(err, OvsdbError::UnknownTable { ref table, .. } if table == "Nope"));
    }

    #[test]
    fn initial_fills_defaults_then_diffs_apply() {
        let schema = schema();
        let mut cache = Cache::default();
        cache
            .reset(
                &spec(),
                &json!({"Interface": {U1: {"initial": {"name": "p0", "type": "internal"}}}}),
                &schema,
            )
            .unwrap();
        assert_eq!(cache.len("Port"), 0);
        let (_, row) = cache.by_name("Interface", "p0").unwrap();
        assert_eq!(row.get("ofport"), Some(&Datum::empty()));
        assert_eq!(row.get("options"), Some(&Datum::empty_map()));

        let changes = cache
            .apply_update2(
                &json!({
                    "Interface": {U1: {"modify": {"ofport": 7, "options": ["map", [["key", "flow"]]]}}},
                    "Port": {U2: {"insert": {"name": "p0", "interfaces": ["uuid", U1]}}}
                }),
                &schema,
            )
            .unwrap();
        assert_eq!(changes.len(), 2);
        let u1 = Uuid::parse(U1).unwrap();
        let row = cache.row("Interface", &u1).unwrap();
        assert_eq!(row.get_i64("ofport"), Some(7));
        assert_eq!(row.get_map("options")["key"], "flow");
        assert_eq!(
            cache
                .by_name("Port", "p0")
                .unwrap()
                .1
                .get_uuids("interfaces"),
            vec![u1.clone()]
        );

        // ofport 7 -> 8 (optional, max 1) and type (scalar) arrive as the new value.
        cache
            .apply_update2(
                &json!({"Interface": {U1: {"modify": {"ofport": 8, "type": "geneve",
                                                      "options": ["map", [["key", "flow"], ["remote_ip", "flow"]]]}}}}),
                &schema,
            )
            .unwrap();
        let row = cache.row("Interface", &u1).unwrap();
        assert_eq!(row.get_i64("ofport"), Some(8));
        assert_eq!(row.get_str("type"), Some("geneve"));
        assert_eq!(
            row.get_map("options"),
            BTreeMap::from([("remote_ip".to_owned(), "flow".to_owned())])
        );

        cache
            .apply_update2(
                &json!({"Interface": {U1: {"modify": {"ofport": ["set", []]}}}}),
                &schema,
            )
            .unwrap();
        assert_eq!(cache.row("Interface", &u1).unwrap().get_i64("ofport"), None);

        let changes = cache
            .apply_update2(&json!({"Interface": {U1: {"delete": null}}}), &schema)
            .unwrap();
        assert_eq!(changes[0].kind, ChangeKind::Delete);
        assert_eq!(cache.len("Interface"), 0);
    }

    #[test]
    fn reset_replaces_everything() {
        let schema = schema();
        let mut cache = Cache::default();
        cache
            .reset(
                &spec(),
                &json!({"Port": {U2: {"initial": {"name": "a"}}}}),
                &schema,
            )
            .unwrap();
        cache
            .reset(
                &spec(),
                &json!({"Port": {U1: {"initial": {"name": "b"}}}}),
                &schema,
            )
            .unwrap();
        assert_eq!(cache.len("Port"), 1);
        assert!(cache.by_name("Port", "a").is_none());
        assert!(cache.by_name("Port", "b").is_some());
    }

    #[test]
    fn bad_updates_are_errors() {
        let schema = schema();
        let mut cache = Cache::default();
        for bad in [
            json!([]),
            json!({"Nope": {}}),
            json!({"Port": []}),
            json!({"Port": {"not-a-uuid": {"insert": {}}}}),
            json!({"Port": {U1: {"insert": {}, "delete": null}}}),
            json!({"Port": {U1: {"frobnicate": {}}}}),
            json!({"Port": {U1: {"modify": {"name": "x"}}}}),
        ] {
            assert!(cache.apply_update2(&bad, &schema).is_err(), "{bad}");
        }
        cache
            .apply_update2(&json!({"Port": {U1: {"insert": {"name": "a"}}}}), &schema)
            .unwrap();
        assert!(cache
            .apply_update2(&json!({"Port": {U1: {"modify": {"bogus": 1}}}}), &schema)
            .is_err());
        assert!(cache
            .apply_update2(
                &json!({"Port": {U1: {"modify": {"interfaces": ["map", [[1, 2]]]}}}}),
                &schema
            )
            .is_err());
    }

    #[test]
    fn rows_hold_exactly_the_monitored_columns() {
        let schema = schema();
        let mut cache = Cache::default();
        cache
            .reset(
                &spec(),
                &json!({"Port": {U2: {"initial": {"name": "a", "interfaces": ["uuid", U1]}}}}),
                &schema,
            )
            .unwrap();
        cache
            .apply_update2(
                &json!({"Interface": {U1: {"insert": {"name": "i"}}}}),
                &schema,
            )
            .unwrap();
        let u1 = Uuid::parse(U1).unwrap();
        let iface = cache.row("Interface", &u1).unwrap();
        let cols: Vec<&String> = iface.iter().map(|(c, _)| c).collect();
        assert_eq!(cols, ["error", "name", "ofport", "options", "type"]);
        assert_eq!(iface.get_str("type"), Some(""));
        assert_eq!(cache.as_map()["Port"].len(), 1);
        assert_eq!(cache.tables().count(), 2);
        assert!(cache.root().is_none());
    }
}
