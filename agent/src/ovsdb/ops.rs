//! Transaction operations (RFC 7047 section 5.2) and the reading of a `transact` result,
//! including the per-operation errors and the trailing commit error.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::datum::{short, Atom, Datum, Row, Uuid};
use super::error::{OvsdbError, Result, TxError};

/// A condition function (`<`, `==`, `includes`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>=`
    Ge,
    /// `>`
    Gt,
    /// `includes`
    Includes,
    /// `excludes`
    Excludes,
}

impl Function {
    fn as_str(self) -> &'static str {
        match self {
            Function::Lt => "<",
            Function::Le => "<=",
            Function::Eq => "==",
            Function::Ne => "!=",
            Function::Ge => ">=",
            Function::Gt => ">",
            Function::Includes => "includes",
            Function::Excludes => "excludes",
        }
    }
}

/// A where-clause condition `[column, function, value]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// Column name (may be `_uuid`).
    pub column: String,
    /// The function.
    pub function: Function,
    /// The value compared against.
    pub value: Datum,
}

impl Condition {
    /// A condition with any function.
    pub fn new(column: &str, function: Function, value: impl Into<Datum>) -> Self {
        Condition {
            column: column.to_owned(),
            function,
            value: value.into(),
        }
    }

    /// `column == value`.
    pub fn eq(column: &str, value: impl Into<Datum>) -> Self {
        Condition::new(column, Function::Eq, value)
    }

    /// `column != value`.
    pub fn ne(column: &str, value: impl Into<Datum>) -> Self {
        Condition::new(column, Function::Ne, value)
    }

    /// `column includes value`.
    pub fn includes(column: &str, value: impl Into<Datum>) -> Self {
        Condition::new(column, Function::Includes, value)
    }

    /// `_uuid == uuid`.
    pub fn uuid(uuid: &Uuid) -> Self {
        Condition::eq("_uuid", uuid)
    }

    fn to_json(&self) -> Value {
        json!([self.column, self.function.as_str(), self.value.to_json()])
    }
}

/// A mutator (`+=`, `insert`, `delete`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutator {
    /// `+=`
    Add,
    /// `-=`
    Sub,
    /// `*=`
    Mul,
    /// `/=`
    Div,
    /// `%=`
    Mod,
    /// `insert` (sets and maps; existing map keys keep their values)
    Insert,
    /// `delete` (a set of elements, a map of pairs, or a set of map keys)
    Delete,
}

impl Mutator {
    fn as_str(self) -> &'static str {
        match self {
            Mutator::Add => "+=",
            Mutator::Sub => "-=",
            Mutator::Mul => "*=",
            Mutator::Div => "/=",
            Mutator::Mod => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        }
    }
}

/// A mutation `[column, mutator, value]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    /// Column name.
    pub column: String,
    /// The mutator.
    pub mutator: Mutator,
    /// The operand.
    pub value: Datum,
}

impl Mutation {
    /// A mutation with any mutator.
    pub fn new(column: &str, mutator: Mutator, value: impl Into<Datum>) -> Self {
        Mutation {
            column: column.to_owned(),
            mutator,
            value: value.into(),
        }
    }

    /// `column insert value`.
    pub fn insert(column: &str, value: impl Into<Datum>) -> Self {
        Mutation::new(column, Mutator::Insert, value)
    }

    /// `column delete value`.
    pub fn delete(column: &str, value: impl Into<Datum>) -> Self {
        Mutation::new(column, Mutator::Delete, value)
    }

    /// The two mutations that make the string map `column` contain `pairs` (replacing values of
    /// keys already present) while keeping other keys: delete the keys, then insert the pairs.
    pub fn merge_map(column: &str, pairs: &BTreeMap<String, String>) -> [Mutation; 2] {
        [
            Mutation::delete(column, Datum::set(pairs.keys())),
            Mutation::insert(column, Datum::map(pairs.iter())),
        ]
    }

    fn to_json(&self) -> Value {
        json!([self.column, self.mutator.as_str(), self.value.to_json()])
    }
}

/// What a `wait` operation waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitUntil {
    /// Until the selected rows equal the given rows.
    Equal,
    /// Until they differ.
    NotEqual,
}

/// One transaction operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Insert `row`; `uuid_name` lets later operations refer to it as `["named-uuid", name]`.
    Insert {
        /// Table.
        table: String,
        /// The new row.
        row: Row,
        /// Optional `uuid-name`.
        uuid_name: Option<String>,
    },
    /// Select rows matching `conditions`; `columns` limits the returned columns.
    Select {
        /// Table.
        table: String,
        /// Where-clause.
        conditions: Vec<Condition>,
        /// Returned columns (all when `None`).
        columns: Option<Vec<String>>,
    },
    /// Set the columns in `row` on all rows matching `conditions`.
    Update {
        /// Table.
        table: String,
        /// Where-clause.
        conditions: Vec<Condition>,
        /// Columns to set.
        row: Row,
    },
    /// Apply `mutations` to all rows matching `conditions`.
    Mutate {
        /// Table.
        table: String,
        /// Where-clause.
        conditions: Vec<Condition>,
        /// Mutations, applied in order.
        mutations: Vec<Mutation>,
    },
    /// Delete all rows matching `conditions`.
    Delete {
        /// Table.
        table: String,
        /// Where-clause.
        conditions: Vec<Condition>,
    },
    /// Wait until the selected rows (projected on `columns`) equal / differ from `rows`; with a
    /// `timeout_ms` of 0 this is an atomic assertion that fails with `timed out`.
    Wait {
        /// Table.
        table: String,
        /// Where-clause.
        conditions: Vec<Condition>,
        /// Columns compared.
        columns: Vec<String>,
        /// Equal or not equal.
        until: WaitUntil,
        /// Expected rows.
        rows: Vec<Row>,
        /// Milliseconds to wait; `None` waits forever.
        timeout_ms: Option<u64>,
    },
    /// A comment recorded in the database log.
    Comment(String),
}

impl Operation {
    /// `insert` without a uuid-name.
    pub fn insert(table: &str, row: Row) -> Self {
        Operation::Insert {
            table: table.to_owned(),
            row,
            uuid_name: None,
        }
    }

    /// `insert` with a uuid-name.
    pub fn insert_named(table: &str, row: Row, uuid_name: &str) -> Self {
        Operation::Insert {
            table: table.to_owned(),
            row,
            uuid_name: Some(uuid_name.to_owned()),
        }
    }

    /// `select` of some or all columns.
    pub fn select(table: &str, conditions: Vec<Condition>, columns: Option<&[&str]>) -> Self {
        Operation::Select {
            table: table.to_owned(),
            conditions,
            columns: columns.map(|c| c.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    /// `update`.
    pub fn update(table: &str, conditions: Vec<Condition>, row: Row) -> Self {
        Operation::Update {
            table: table.to_owned(),
            conditions,
            row,
        }
    }

    /// `mutate`.
    pub fn mutate(table: &str, conditions: Vec<Condition>, mutations: Vec<Mutation>) -> Self {
        Operation::Mutate {
            table: table.to_owned(),
            conditions,
            mutations,
        }
    }

    /// `delete`.
    pub fn delete(table: &str, conditions: Vec<Condition>) -> Self {
        Operation::Delete {
            table: table.to_owned(),
            conditions,
        }
    }

    /// A `wait` with timeout 0 asserting that the rows matching `conditions` exist (`exists`)
    /// or do not exist (`!exists`), compared on `column`.
    pub fn assert_rows(
        table: &str,
        conditions: Vec<Condition>,
        column: &str,
        exists: bool,
    ) -> Self {
        Operation::Wait {
            table: table.to_owned(),
            conditions,
            columns: vec![column.to_owned()],
            until: if exists {
                WaitUntil::NotEqual
            } else {
                WaitUntil::Equal
            },
            rows: Vec::new(),
            timeout_ms: Some(0),
        }
    }

    /// `comment`.
    pub fn comment(text: &str) -> Self {
        Operation::Comment(text.to_owned())
    }

    /// The operation name on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::Insert { .. } => "insert",
            Operation::Select { .. } => "select",
            Operation::Update { .. } => "update",
            Operation::Mutate { .. } => "mutate",
            Operation::Delete { .. } => "delete",
            Operation::Wait { .. } => "wait",
            Operation::Comment(_) => "comment",
        }
    }

    /// The table operated on, if any.
    pub fn table(&self) -> Option<&str> {
        match self {
            Operation::Insert { table, .. }
            | Operation::Select { table, .. }
            | Operation::Update { table, .. }
            | Operation::Mutate { table, .. }
            | Operation::Delete { table, .. }
            | Operation::Wait { table, .. } => Some(table),
            Operation::Comment(_) => None,
        }
    }

    /// Column names the operation writes or reads, for naming the culprit of an error.
    fn columns(&self) -> Vec<&str> {
        match self {
            Operation::Insert { row, .. } | Operation::Update { row, .. } => {
                row.iter().map(|(c, _)| c.as_str()).collect()
            }
            Operation::Mutate {
                mutations,
                conditions,
                ..
            } => mutations
                .iter()
                .map(|m| m.column.as_str())
                .chain(conditions.iter().map(|c| c.column.as_str()))
                .collect(),
            Operation::Select {
                conditions,
                columns,
                ..
            } => conditions
                .iter()
                .map(|c| c.column.as_str())
                .chain(columns.iter().flatten().map(String::as_str))
                .collect(),
            Operation::Delete { conditions, .. } => {
                conditions.iter().map(|c| c.column.as_str()).collect()
            }
            Operation::Wait {
                conditions,
                columns,
                ..
            } => conditions
                .iter()
                .map(|c| c.column.as_str())
                .chain(columns.iter().map(String::as_str))
                .collect(),
            Operation::Comment(_) => Vec::new(),
        }
    }

    /// The JSON form of the operation.
    pub fn to_json(&self) -> Value {
        let conds = |c: &[Condition]| Value::Array(c.iter().map(Condition::to_json).collect());
        match self {
            Operation::Insert {
                table,
                row,
                uuid_name,
            } => {
                let mut op = json!({"op": "insert", "table": table, "row": row.to_json()});
                if let Some(name) = uuid_name {
                    op["uuid-name"] = json!(name);
                }
                op
            }
            Operation::Select {
                table,
                conditions,
                columns,
            } => {
                let mut op = json!({"op": "select", "table": table, "where": conds(conditions)});
                if let Some(columns) = columns {
                    op["columns"] = json!(columns);
                }
                op
            }
            Operation::Update {
                table,
                conditions,
                row,
            } => {
                json!({"op": "update", "table": table, "where": conds(conditions), "row": row.to_json()})
            }
            Operation::Mutate {
                table,
                conditions,
                mutations,
            } => json!({
                "op": "mutate", "table": table, "where": conds(conditions),
                "mutations": mutations.iter().map(Mutation::to_json).collect::<Vec<_>>()
            }),
            Operation::Delete { table, conditions } => {
                json!({"op": "delete", "table": table, "where": conds(conditions)})
            }
            Operation::Wait {
                table,
                conditions,
                columns,
                until,
                rows,
                timeout_ms,
            } => {
                let mut op = json!({
                    "op": "wait", "table": table, "where": conds(conditions),
                    "columns": columns,
                    "until": if *until == WaitUntil::Equal { "==" } else { "!=" },
                    "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>()
                });
                if let Some(t) = timeout_ms {
                    op["timeout"] = json!(t);
                }
                op
            }
            Operation::Comment(text) => json!({"op": "comment", "comment": text}),
        }
    }
}

/// The result of one successful operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpResult {
    /// Rows affected (update, mutate, delete).
    pub count: Option<u64>,
    /// UUID of the inserted row (insert).
    pub uuid: Option<Uuid>,
    /// Selected rows (select).
    pub rows: Option<Vec<Row>>,
}

impl OpResult {
    /// Rows affected, 0 when absent.
    pub fn count(&self) -> u64 {
        self.count.unwrap_or(0)
    }

    /// Selected rows, empty when absent.
    pub fn rows(&self) -> &[Row] {
        self.rows.as_deref().unwrap_or_default()
    }
}

/// The results of a successful transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransactOutcome {
    /// One result per operation, in order.
    pub results: Vec<OpResult>,
    /// The real UUID of each row inserted with a `uuid-name`.
    pub named_uuids: BTreeMap<String, Uuid>,
}

/// The params of a `transact` request.
pub fn transact_params(database: &str, ops: &[Operation]) -> Value {
    let mut params = Vec::with_capacity(ops.len() + 1);
    params.push(json!(database));
    params.extend(ops.iter().map(Operation::to_json));
    Value::Array(params)
}

/// Reads a `transact` result array: the first error object becomes [`OvsdbError::Transaction`]
/// (naming the op) or, past the last op, [`OvsdbError::CommitFailed`].
pub fn parse_transact_result(ops: &[Operation], result: &Value) -> Result<TransactOutcome> {
    let items = result.as_array().ok_or_else(|| OvsdbError::Protocol {
        reason: format!("transact result is not an array: {}", short(result)),
    })?;
    for (index, item) in items.iter().enumerate() {
        let Some(error) = item.get("error") else {
            continue;
        };
        let error = error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_owned);
        let details = item
            .get("details")
            .and_then(Value::as_str)
            .map(str::to_owned);
        return Err(match ops.get(index) {
            Some(op) => OvsdbError::Transaction(Box::new(TxError {
                op_index: index,
                op: op.kind(),
                table: op.table().map(str::to_owned),
                column: culprit_column(op, &error, details.as_deref()),
                error,
                details,
            })),
            None => OvsdbError::CommitFailed { error, details },
        });
    }
    if items.len() < ops.len() {
        return Err(OvsdbError::Protocol {
            reason: format!(
                "transact returned {} results for {} operations",
                items.len(),
                ops.len()
            ),
        });
    }
    let mut outcome = TransactOutcome::default();
    for (op, item) in ops.iter().zip(items) {
        let result = parse_op_result(item)?;
        if let (
            Operation::Insert {
                uuid_name: Some(name),
                ..
            },
            Some(uuid),
        ) = (op, &result.uuid)
        {
            outcome.named_uuids.insert(name.clone(), uuid.clone());
        }
        outcome.results.push(result);
    }
    Ok(outcome)
}

fn parse_op_result(item: &Value) -> Result<OpResult> {
    if item.is_null() {
        return Ok(OpResult::default());
    }
    let count = item.get("count").and_then(Value::as_u64);
    let uuid = match item.get("uuid") {
        Some(v) => Some(
            Datum::from_json(v)?
                .as_uuid()
                .cloned()
                .ok_or_else(|| OvsdbError::invalid("insert result uuid", short(v)))?,
        ),
        None => None,
    };
    let rows = match item.get("rows") {
        Some(Value::Array(rows)) => Some(rows.iter().map(Row::from_json).collect::<Result<_>>()?),
        Some(other) => return Err(OvsdbError::invalid("select result rows", short(other))),
        None => None,
    };
    Ok(OpResult { count, uuid, rows })
}

/// The column an error is about: from `No column X in table T.` details, or else the op's own
/// column named in the details.
fn culprit_column(op: &Operation, error: &str, details: Option<&str>) -> Option<String> {
    let details = details?;
    if error == "unknown column" {
        if let Some(rest) = details.strip_prefix("No column ") {
            if let Some(column) = rest.split(" in table").next() {
                return Some(column.to_owned());
            }
        }
    }
    // Range errors start with the offending value: "0 is less than minimum allowed value 1".
    if let (Operation::Insert { row, .. } | Operation::Update { row, .. }, Some(value)) =
        (op, details.split_whitespace().next())
    {
        let mut holders = row.iter().filter(|(_, datum)| match datum {
            Datum::Set(atoms) => atoms.iter().any(|a| renders_as(a, value)),
            Datum::Map(pairs) => pairs
                .iter()
                .any(|(k, v)| renders_as(k, value) || renders_as(v, value)),
        });
        if let (Some((column, _)), None) = (holders.next(), holders.next()) {
            return Some(column.clone());
        }
    }
    op.columns()
        .into_iter()
        .filter(|c| {
            details
                .match_indices(c)
                .any(|(i, _)| is_word_at(details, i, c.len()))
        })
        .max_by_key(|c| c.len())
        .map(str::to_owned)
}

/// True if the atom's JSON text is `text` (how ovsdb-server quotes values in details).
fn renders_as(atom: &Atom, text: &str) -> bool {
    let json = atom.to_json().to_string();
    json == text
}

fn is_word_at(text: &str, start: usize, len: usize) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    !word(text[..start].chars().next_back()) && !word(text[start + len..].chars().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "1a1a1a1a-0000-4000-8000-000000000001";

    fn ops() -> Vec<Operation> {
        vec![
            Operation::insert_named(
                "Interface",
                Row::new().with("name", "p0").with("mtu_request", 0i64),
                "iface",
            ),
            Operation::mutate(
                "Bridge",
                vec![Condition::eq("name", "br0")],
                vec![Mutation::insert("ports", Datum::named_uuid("port"))],
            ),
            Operation::select("Port", vec![], Some(&["name"])),
        ]
    }

    #[test]
    fn operations_serialise_per_rfc() {
        let ops = ops();
        assert_eq!(
            transact_params("Open_vSwitch", &ops),
            json!([
                "Open_vSwitch",
                {"op": "insert", "table": "Interface", "uuid-name": "iface",
                 "row": {"mtu_request": 0, "name": "p0"}},
                {"op": "mutate", "table": "Bridge", "where": [["name", "==", "br0"]],
                 "mutations": [["ports", "insert", ["named-uuid", "port"]]]},
                {"op": "select", "table": "Port", "where": [], "columns": ["name"]}
            ])
        );
        assert_eq!(
            Operation::assert_rows("Port", vec![Condition::eq("name", "p")], "name", false)
                .to_json(),
            json!({"op": "wait", "table": "Port", "where": [["name", "==", "p"]],
                   "columns": ["name"], "until": "==", "rows": [], "timeout": 0})
        );
        assert_eq!(
            Operation::delete("Port", vec![Condition::uuid(&Uuid::parse(U1).unwrap())]).to_json(),
            json!({"op": "delete", "table": "Port", "where": [["_uuid", "==", ["uuid", U1]]]})
        );
        assert_eq!(
            Operation::comment("hi").to_json(),
            json!({"op": "comment", "comment": "hi"})
        );
        let merge = Mutation::merge_map(
            "external_ids",
            &BTreeMap::from([("a".to_owned(), "1".to_owned())]),
        );
        assert_eq!(merge[0].to_json(), json!(["external_ids", "delete", "a"]));
        assert_eq!(
            merge[1].to_json(),
            json!(["external_ids", "insert", ["map", [["a", "1"]]]])
        );
    }

    #[test]
    fn success_maps_named_uuids_and_rows() {
        let out = parse_transact_result(
            &ops(),
            &json!([{"uuid": ["uuid", U1]}, {"count": 1}, {"rows": [{"name": "p0"}]}]),
        )
        .unwrap();
        assert_eq!(out.named_uuids["iface"].as_str(), U1);
        assert_eq!(out.results[1].count(), 1);
        assert_eq!(out.results[2].rows()[0].get_str("name"), Some("p0"));
    }

    #[test]
    fn op_error_names_index_table_and_column() {
        let err = parse_transact_result(
            &ops(),
            &json!([{"error": "constraint violation",
                     "details": "0 is less than minimum allowed value 1 for column mtu_request"}, null, null]),
        )
        .unwrap_err();
        let tx = err.tx_error().unwrap();
        assert_eq!(tx.op_index, 0);
        assert_eq!(tx.op, "insert");
        assert_eq!(tx.table.as_deref(), Some("Interface"));
        assert_eq!(tx.column.as_deref(), Some("mtu_request"));
        let text = err.to_string();
        assert!(text.contains("op 0 (insert on table Interface"), "{text}");
        assert!(text.contains("constraint violation"), "{text}");
    }

    #[test]
    fn unknown_column_is_named() {
        let err = parse_transact_result(
            &ops(),
            &json!([{"count": 1}, {"error": "unknown column", "details": "No column bogus in table Bridge."}, null]),
        )
        .unwrap_err();
        let tx = err.tx_error().unwrap();
        assert_eq!(tx.op_index, 1);
        assert_eq!(tx.column.as_deref(), Some("bogus"));
    }

    #[test]
    fn trailing_error_is_a_commit_failure() {
        let err = parse_transact_result(
            &ops(),
            &json!([{"uuid": ["uuid", U1]}, {"count": 1}, {"rows": []},
                    {"error": "constraint violation", "details": "duplicate name"}]),
        )
        .unwrap_err();
        assert!(
            matches!(err, OvsdbError::CommitFailed { ref error, .. } if error == "constraint violation")
        );
        assert!(err.to_string().contains("duplicate name"));
    }

    #[test]
    fn malformed_results_are_protocol_errors() {
        assert!(parse_transact_result(&ops(), &json!({"x": 1})).is_err());
        assert!(parse_transact_result(&ops(), &json!([{"count": 1}])).is_err());
        assert!(parse_transact_result(&ops(), &json!([{"uuid": "nope"}, null, null])).is_err());
        assert!(parse_transact_result(&ops(), &json!([null, null, {"rows": 5}])).is_err());
    }

    #[test]
    fn range_error_names_the_column_holding_the_value() {
        let op = Operation::insert(
            "Interface",
            Row::new()
                .with("name", "p")
                .with("ofport_request", 70000i64)
                .with("mtu_request", 1500i64),
        );
        assert_eq!(
            culprit_column(
                &op,
                "constraint violation",
                Some("70000 is not in the valid range 1 to 65279 (inclusive)")
            )
            .as_deref(),
            Some("ofport_request")
        );
    }

    #[test]
    fn word_matching_for_culprit() {
        let op = Operation::insert("T", Row::new().with("mtu", 1i64).with("mtu_request", 0i64));
        assert_eq!(
            culprit_column(&op, "constraint violation", Some("bad mtu_request value")).as_deref(),
            Some("mtu_request")
        );
        assert_eq!(culprit_column(&op, "x", Some("nothing here")), None);
    }
}
