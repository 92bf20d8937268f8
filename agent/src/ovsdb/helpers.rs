//! Typed, idempotent operations on the rows Weft owns (bridge, ports, external_ids,
//! flow-restore-wait), over the raw [`Client`].
//!
//! "Ensure" means create-or-update to the desired state. Creation is guarded by a `wait` with
//! timeout 0 asserting the row is still absent, so two writers racing never create duplicates:
//! the loser's transaction fails as a whole and it retries as an update.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use super::client::Client;
use super::datum::{Datum, Row, Uuid};
use super::error::{OvsdbError, Result};
use super::ops::{Condition, Mutation, Operation};

const ATTEMPTS: u32 = 5;
const FLOW_RESTORE_WAIT: &str = "flow-restore-wait";

/// OVS datapath type of a bridge (also the agent config key `ovsDatapathType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatapathType {
    /// The kernel datapath (`system`).
    System,
    /// The userspace datapath (`netdev`).
    Netdev,
}

impl DatapathType {
    /// The `datapath_type` column value.
    pub fn as_str(self) -> &'static str {
        match self {
            DatapathType::System => "system",
            DatapathType::Netdev => "netdev",
        }
    }
}

/// Bridge fail mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// No flows but the controller's (Weft's choice).
    Secure,
    /// Act as a learning switch without a controller.
    Standalone,
}

impl FailMode {
    fn as_str(self) -> &'static str {
        match self {
            FailMode::Secure => "secure",
            FailMode::Standalone => "standalone",
        }
    }
}

/// Desired state of a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    /// Bridge name.
    pub name: String,
    /// Datapath type.
    pub datapath_type: DatapathType,
    /// OpenFlow versions, e.g. `["OpenFlow15"]`; set exactly.
    pub protocols: Vec<String>,
    /// Fail mode; `None` clears it.
    pub fail_mode: Option<FailMode>,
    /// `other_config` keys to set (other keys are kept).
    pub other_config: BTreeMap<String, String>,
    /// `external_ids` keys to set (other keys are kept).
    pub external_ids: BTreeMap<String, String>,
}

impl BridgeSpec {
    /// Weft's bridge defaults: OpenFlow15 only, fail_mode secure, in-band control disabled.
    pub fn new(name: &str, datapath_type: DatapathType) -> Self {
        BridgeSpec {
            name: name.to_owned(),
            datapath_type,
            protocols: vec!["OpenFlow15".to_owned()],
            fail_mode: Some(FailMode::Secure),
            other_config: BTreeMap::from([("disable-in-band".to_owned(), "true".to_owned())]),
            external_ids: BTreeMap::new(),
        }
    }

    /// Builder: fixes the datapath id (`other_config:datapath-id`, 16 hex digits).
    pub fn with_datapath_id(mut self, id: u64) -> Self {
        self.other_config
            .insert("datapath-id".to_owned(), format!("{id:016x}"));
        self
    }

    /// Builder: sets an external id.
    pub fn with_external_id(mut self, key: &str, value: &str) -> Self {
        self.external_ids.insert(key.to_owned(), value.to_owned());
        self
    }

    fn columns(&self) -> Row {
        Row::new()
            .with("datapath_type", self.datapath_type.as_str())
            .with("protocols", Datum::set(self.protocols.iter()))
            .with(
                "fail_mode",
                Datum::optional(self.fail_mode.map(FailMode::as_str)),
            )
    }
}

/// Kind of OVS port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// An OVS internal port (a netdev created by OVS).
    Internal,
    /// An existing network device (veth, uplink); Interface type `""`.
    System,
    /// A Geneve tunnel port.
    Geneve,
    /// A VXLAN tunnel port.
    Vxlan,
    /// A GRE tunnel port.
    Gre,
}

impl PortKind {
    /// The Interface `type` column value.
    pub fn ovs_type(self) -> &'static str {
        match self {
            PortKind::Internal => "internal",
            PortKind::System => "",
            PortKind::Geneve => "geneve",
            PortKind::Vxlan => "vxlan",
            PortKind::Gre => "gre",
        }
    }
}

/// Desired state of a single-interface port (Port and Interface share the name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Port and interface name.
    pub name: String,
    /// Kind.
    pub kind: PortKind,
    /// Interface `options` (e.g. `remote_ip=flow`, `key=flow`, `dst_port`); set exactly.
    pub options: BTreeMap<String, String>,
    /// Requested OpenFlow port number; `None` lets OVS choose.
    pub ofport_request: Option<u32>,
    /// Requested MTU; `None` leaves the MTU to OVS.
    pub mtu_request: Option<u32>,
    /// `external_ids` keys to set on both the Port and the Interface (other keys are kept).
    pub external_ids: BTreeMap<String, String>,
}

impl PortSpec {
    /// A port of `kind` with no options.
    pub fn new(name: &str, kind: PortKind) -> Self {
        PortSpec {
            name: name.to_owned(),
            kind,
            options: BTreeMap::new(),
            ofport_request: None,
            mtu_request: None,
            external_ids: BTreeMap::new(),
        }
    }

    /// Builder: sets an option.
    pub fn with_option(mut self, key: &str, value: &str) -> Self {
        self.options.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Builder: requests an ofport.
    pub fn with_ofport_request(mut self, ofport: u32) -> Self {
        self.ofport_request = Some(ofport);
        self
    }

    /// Builder: requests an MTU.
    pub fn with_mtu_request(mut self, mtu: u32) -> Self {
        self.mtu_request = Some(mtu);
        self
    }

    /// Builder: sets an external id.
    pub fn with_external_id(mut self, key: &str, value: &str) -> Self {
        self.external_ids.insert(key.to_owned(), value.to_owned());
        self
    }

    /// The Interface columns this spec sets exactly.
    fn interface_columns(&self) -> Row {
        Row::new()
            .with("type", self.kind.ovs_type())
            .with("options", Datum::map(self.options.iter()))
            .with(
                "ofport_request",
                Datum::optional(self.ofport_request.map(i64::from)),
            )
            .with(
                "mtu_request",
                Datum::optional(self.mtu_request.map(i64::from)),
            )
    }
}

/// A row that carries `external_ids`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The `Open_vSwitch` root row.
    OpenVSwitch,
    /// A bridge by name.
    Bridge(String),
    /// A port by name.
    Port(String),
    /// An interface by name.
    Interface(String),
}

impl Record {
    fn table(&self) -> &'static str {
        match self {
            Record::OpenVSwitch => "Open_vSwitch",
            Record::Bridge(_) => "Bridge",
            Record::Port(_) => "Port",
            Record::Interface(_) => "Interface",
        }
    }

    fn conditions(&self) -> Vec<Condition> {
        match self {
            Record::OpenVSwitch => Vec::new(),
            Record::Bridge(name) | Record::Port(name) | Record::Interface(name) => {
                vec![Condition::eq("name", name.as_str())]
            }
        }
    }

    fn name(&self) -> &str {
        match self {
            Record::OpenVSwitch => "*",
            Record::Bridge(name) | Record::Port(name) | Record::Interface(name) => name,
        }
    }

    fn not_found(&self) -> OvsdbError {
        OvsdbError::RowNotFound {
            table: self.table().to_owned(),
            name: self.name().to_owned(),
        }
    }
}

/// The OVSDB side effects of the agent.
///
/// Guarantees: every method is one OVSDB transaction (all-or-nothing) and idempotent; "ensure"
/// methods converge an existing row to the spec (columns in the spec are set exactly, except
/// `other_config` and `external_ids`, whose listed keys are set and other keys kept). Errors are
/// typed [`OvsdbError`]s; a call never hangs past the client's call timeout.
pub trait OvsBridgeClient: Send + Sync {
    /// Creates or updates the bridge; returns its UUID.
    fn ensure_bridge(&self, spec: &BridgeSpec) -> impl Future<Output = Result<Uuid>> + Send;

    /// Deletes the bridge and its ports; `false` if it did not exist.
    fn delete_bridge(&self, name: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Creates or updates the port (and its interface) on `bridge`, moving it there from another
    /// bridge if needed; returns the Port UUID. Fails with [`OvsdbError::RowNotFound`] if the
    /// bridge does not exist.
    fn ensure_port(
        &self,
        bridge: &str,
        spec: &PortSpec,
    ) -> impl Future<Output = Result<Uuid>> + Send;

    /// Deletes the port from whatever bridge holds it; `false` if it did not exist.
    fn delete_port(&self, name: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Waits until OVS assigns the interface an ofport (seen through the monitor cache);
    /// [`OvsdbError::InterfaceFailed`] carries the Interface `error` column if OVS gave up.
    fn wait_for_ofport(
        &self,
        interface: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<u32>> + Send;

    /// Reads `external_ids` of a row, from the server.
    fn external_ids(
        &self,
        record: &Record,
    ) -> impl Future<Output = Result<BTreeMap<String, String>>> + Send;

    /// Sets the given `external_ids` keys (other keys are kept).
    fn set_external_ids(
        &self,
        record: &Record,
        ids: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Removes the given `external_ids` keys (absent keys are ignored).
    fn remove_external_ids(
        &self,
        record: &Record,
        keys: &[&str],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Sets (`true`) or clears `other_config:flow-restore-wait` on `Open_vSwitch`.
    fn set_flow_restore_wait(&self, enabled: bool) -> impl Future<Output = Result<()>> + Send;
}

/// [`OvsBridgeClient`] over a live [`Client`].
#[derive(Debug, Clone)]
pub struct Ovs {
    client: Client,
}

/// True if op `index` was one of our `wait` assertions and it did not hold.
fn assertion_failed(error: &OvsdbError, index: usize) -> bool {
    error
        .tx_error()
        .is_some_and(|tx| tx.op_index == index && tx.op == "wait" && tx.error == "timed out")
}

/// Creates the port `spec` (absent, asserted by the first op) on `bridge`: its Interface and
/// Port rows are named `iface{tag}` and `port{tag}` in the transaction.
pub(super) fn insert_port_ops(bridge: &str, spec: &PortSpec, tag: &str) -> [Operation; 4] {
    let name = spec.name.as_str();
    let (iface_row, port_row) = (format!("iface{tag}"), format!("port{tag}"));
    let ids = Datum::map(spec.external_ids.iter());
    let iface = spec
        .interface_columns()
        .with("name", name)
        .with("external_ids", ids.clone());
    let port = Row::new()
        .with("name", name)
        .with("interfaces", Datum::named_uuid(&iface_row))
        .with("external_ids", ids);
    [
        Operation::assert_rows("Port", name_is(name), "name", false),
        Operation::insert_named("Interface", iface, &iface_row),
        Operation::insert_named("Port", port, &port_row),
        Operation::mutate(
            "Bridge",
            name_is(bridge),
            vec![Mutation::insert("ports", Datum::named_uuid(&port_row))],
        ),
    ]
}

/// Deletes the port row `uuid` (named `name`) from whatever bridge holds it; the delete is the
/// second op (its count says whether the row existed).
pub(super) fn delete_port_ops(uuid: &Uuid, name: &str) -> [Operation; 3] {
    // Unreferenced Port and Interface rows are garbage collected (not root tables).
    [
        Operation::mutate("Bridge", Vec::new(), vec![Mutation::delete("ports", uuid)]),
        Operation::delete("Port", vec![Condition::uuid(uuid)]),
        Operation::comment(&format!("weft: delete port {name}")),
    ]
}

pub(super) fn name_is(name: &str) -> Vec<Condition> {
    vec![Condition::eq("name", name)]
}

impl Ovs {
    /// Wraps a client.
    pub fn new(client: Client) -> Self {
        Ovs { client }
    }

    /// The raw client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// UUID of the row of `table` named `name`, read from the server.
    pub async fn uuid_by_name(&self, table: &str, name: &str) -> Result<Option<Uuid>> {
        let out = self
            .client
            .transact(vec![Operation::select(
                table,
                name_is(name),
                Some(&["_uuid"]),
            )])
            .await?;
        Ok(out
            .results
            .first()
            .and_then(|r| r.rows().first())
            .and_then(|row| row.get_uuid("_uuid"))
            .cloned())
    }

    /// Reads `other_config:flow-restore-wait` (absent is `false`).
    pub async fn flow_restore_wait(&self) -> Result<bool> {
        let out = self
            .client
            .transact(vec![Operation::select(
                "Open_vSwitch",
                Vec::new(),
                Some(&["other_config"]),
            )])
            .await?;
        let row = out
            .results
            .first()
            .and_then(|r| r.rows().first())
            .ok_or_else(|| Record::OpenVSwitch.not_found())?;
        Ok(row
            .get_map("other_config")
            .get(FLOW_RESTORE_WAIT)
            .map(String::as_str)
            == Some("true"))
    }

    async fn mutate_record(&self, record: &Record, mutations: Vec<Mutation>) -> Result<()> {
        let out = self
            .client
            .transact(vec![Operation::mutate(
                record.table(),
                record.conditions(),
                mutations,
            )])
            .await?;
        match out.results.first() {
            Some(r) if r.count() > 0 => Ok(()),
            _ => Err(record.not_found()),
        }
    }

    fn interface_state(&self, interface: &str) -> Option<(Option<i64>, Option<String>)> {
        self.client.read_cache(|cache| {
            cache.by_name("Interface", interface).map(|(_, row)| {
                (
                    row.get_i64("ofport"),
                    row.get_str("error").map(str::to_owned),
                )
            })
        })
    }
}

impl OvsBridgeClient for Ovs {
    async fn ensure_bridge(&self, spec: &BridgeSpec) -> Result<Uuid> {
        let name = spec.name.as_str();
        for _ in 0..ATTEMPTS {
            if let Some(uuid) = self.uuid_by_name("Bridge", name).await? {
                let mut mutations = Vec::new();
                if !spec.other_config.is_empty() {
                    mutations.extend(Mutation::merge_map("other_config", &spec.other_config));
                }
                if !spec.external_ids.is_empty() {
                    mutations.extend(Mutation::merge_map("external_ids", &spec.external_ids));
                }
                let mut ops = vec![
                    Operation::assert_rows("Bridge", vec![Condition::uuid(&uuid)], "name", true),
                    Operation::update("Bridge", vec![Condition::uuid(&uuid)], spec.columns()),
                    Operation::mutate(
                        "Open_vSwitch",
                        Vec::new(),
                        vec![Mutation::insert("bridges", &uuid)],
                    ),
                ];
                if !mutations.is_empty() {
                    ops.push(Operation::mutate(
                        "Bridge",
                        vec![Condition::uuid(&uuid)],
                        mutations,
                    ));
                }
                match self.client.transact(ops).await {
                    Ok(_) => return Ok(uuid),
                    Err(e) if assertion_failed(&e, 0) => continue,
                    Err(e) => return Err(e),
                }
            }
            let mut row = spec
                .columns()
                .with("name", name)
                .with("other_config", Datum::map(spec.other_config.iter()))
                .with("external_ids", Datum::map(spec.external_ids.iter()));
            row.set("ports", Datum::empty());
            let ops = vec![
                Operation::assert_rows("Bridge", name_is(name), "name", false),
                Operation::insert_named("Bridge", row, "bridge"),
                Operation::mutate(
                    "Open_vSwitch",
                    Vec::new(),
                    vec![Mutation::insert("bridges", Datum::named_uuid("bridge"))],
                ),
            ];
            match self.client.transact(ops).await {
                Ok(out) => {
                    if out.results.get(2).map(|r| r.count()) != Some(1) {
                        return Err(Record::OpenVSwitch.not_found());
                    }
                    return out.named_uuids.get("bridge").cloned().ok_or_else(|| {
                        OvsdbError::Protocol {
                            reason: "insert of bridge returned no uuid".to_owned(),
                        }
                    });
                }
                Err(e) if assertion_failed(&e, 0) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(OvsdbError::Conflict {
            what: format!("bridge {name}"),
            attempts: ATTEMPTS,
        })
    }

    async fn delete_bridge(&self, name: &str) -> Result<bool> {
        let Some(uuid) = self.uuid_by_name("Bridge", name).await? else {
            return Ok(false);
        };
        let out = self
            .client
            .transact(vec![
                Operation::mutate(
                    "Open_vSwitch",
                    Vec::new(),
                    vec![Mutation::delete("bridges", &uuid)],
                ),
                Operation::delete("Bridge", vec![Condition::uuid(&uuid)]),
            ])
            .await?;
        Ok(out.results.get(1).map(|r| r.count()) == Some(1))
    }

    async fn ensure_port(&self, bridge: &str, spec: &PortSpec) -> Result<Uuid> {
        let name = spec.name.as_str();
        let bridge_missing = || OvsdbError::RowNotFound {
            table: "Bridge".to_owned(),
            name: bridge.to_owned(),
        };
        for _ in 0..ATTEMPTS {
            let existing = self.uuid_by_name("Port", name).await?;
            let mut ops = vec![Operation::assert_rows(
                "Bridge",
                name_is(bridge),
                "name",
                true,
            )];
            match &existing {
                Some(port) => {
                    ops.push(Operation::assert_rows(
                        "Port",
                        vec![Condition::uuid(port)],
                        "name",
                        true,
                    ));
                    ops.push(Operation::assert_rows(
                        "Interface",
                        name_is(name),
                        "name",
                        true,
                    ));
                    ops.push(Operation::update(
                        "Interface",
                        name_is(name),
                        spec.interface_columns(),
                    ));
                    ops.push(Operation::mutate(
                        "Bridge",
                        vec![Condition::ne("name", bridge)],
                        vec![Mutation::delete("ports", port)],
                    ));
                    ops.push(Operation::mutate(
                        "Bridge",
                        name_is(bridge),
                        vec![Mutation::insert("ports", port)],
                    ));
                    if !spec.external_ids.is_empty() {
                        for table in ["Port", "Interface"] {
                            ops.push(Operation::mutate(
                                table,
                                name_is(name),
                                Mutation::merge_map("external_ids", &spec.external_ids).into(),
                            ));
                        }
                    }
                }
                None => ops.extend(insert_port_ops(bridge, spec, "")),
            }
            ops.push(Operation::comment(&format!(
                "weft: ensure port {name} on {bridge}"
            )));
            match self.client.transact(ops).await {
                Ok(out) => {
                    return match existing {
                        Some(uuid) => Ok(uuid),
                        None => out.named_uuids.get("port").cloned().ok_or_else(|| {
                            OvsdbError::Protocol {
                                reason: "insert of port returned no uuid".to_owned(),
                            }
                        }),
                    }
                }
                Err(e) if assertion_failed(&e, 0) => return Err(bridge_missing()),
                // The port appeared or vanished since we looked: look again.
                Err(e) if assertion_failed(&e, 1) => continue,
                Err(e) if existing.is_some() && assertion_failed(&e, 2) => {
                    return Err(OvsdbError::RowNotFound {
                        table: "Interface".to_owned(),
                        name: name.to_owned(),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Err(OvsdbError::Conflict {
            what: format!("port {name}"),
            attempts: ATTEMPTS,
        })
    }

    async fn delete_port(&self, name: &str) -> Result<bool> {
        let Some(uuid) = self.uuid_by_name("Port", name).await? else {
            return Ok(false);
        };
        let out = self
            .client
            .transact(delete_port_ops(&uuid, name).into())
            .await?;
        Ok(out.results.get(1).map(|r| r.count()) == Some(1))
    }

    async fn wait_for_ofport(&self, interface: &str, timeout: Duration) -> Result<u32> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut generation = self.client.watch_generation();
        loop {
            generation.borrow_and_update();
            if let Some((ofport, error)) = self.interface_state(interface) {
                match ofport {
                    Some(port) if port > 0 => {
                        return u32::try_from(port).map_err(|_| {
                            OvsdbError::invalid(
                                format!("ofport of interface {interface}"),
                                port.to_string(),
                            )
                        })
                    }
                    Some(-1) => {
                        return Err(OvsdbError::InterfaceFailed {
                            interface: interface.to_owned(),
                            error: error.unwrap_or_else(|| "ofport is -1".to_owned()),
                        })
                    }
                    _ => {}
                }
            }
            match tokio::time::timeout_at(deadline, generation.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(OvsdbError::Closed),
                Err(_) => {
                    return Err(match self.interface_state(interface) {
                        Some((_, Some(error))) => OvsdbError::InterfaceFailed {
                            interface: interface.to_owned(),
                            error,
                        },
                        _ => OvsdbError::OfportTimeout {
                            interface: interface.to_owned(),
                            timeout,
                        },
                    })
                }
            }
        }
    }

    async fn external_ids(&self, record: &Record) -> Result<BTreeMap<String, String>> {
        let out = self
            .client
            .transact(vec![Operation::select(
                record.table(),
                record.conditions(),
                Some(&["external_ids"]),
            )])
            .await?;
        out.results
            .first()
            .and_then(|r| r.rows().first())
            .map(|row| row.get_map("external_ids"))
            .ok_or_else(|| record.not_found())
    }

    async fn set_external_ids(
        &self,
        record: &Record,
        ids: &BTreeMap<String, String>,
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.mutate_record(record, Mutation::merge_map("external_ids", ids).into())
            .await
    }

    async fn remove_external_ids(&self, record: &Record, keys: &[&str]) -> Result<()> {
        self.mutate_record(
            record,
            vec![Mutation::delete(
                "external_ids",
                Datum::set(keys.iter().copied()),
            )],
        )
        .await
    }

    async fn set_flow_restore_wait(&self, enabled: bool) -> Result<()> {
        let mutations = if enabled {
            Mutation::merge_map(
                "other_config",
                &BTreeMap::from([(FLOW_RESTORE_WAIT.to_owned(), "true".to_owned())]),
            )
            .into()
        } else {
            vec![Mutation::delete("other_config", FLOW_RESTORE_WAIT)]
        };
        self.mutate_record(&Record::OpenVSwitch, mutations).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bridge_spec_columns() {
        let spec = BridgeSpec::new("br-int", DatapathType::Netdev).with_datapath_id(0xab);
        assert_eq!(spec.other_config["datapath-id"], "00000000000000ab");
        assert_eq!(spec.other_config["disable-in-band"], "true");
        assert_eq!(
            spec.columns().to_json(),
            json!({"datapath_type": "netdev", "fail_mode": "secure", "protocols": "OpenFlow15"})
        );
    }

    #[test]
    fn port_spec_columns() {
        let spec = PortSpec::new("tun0", PortKind::Geneve)
            .with_option("remote_ip", "flow")
            .with_option("key", "flow")
            .with_ofport_request(32768)
            .with_mtu_request(1450);
        assert_eq!(
            spec.interface_columns().to_json(),
            json!({"type": "geneve", "options": ["map", [["key", "flow"], ["remote_ip", "flow"]]],
                   "ofport_request": 32768, "mtu_request": 1450})
        );
        let plain = PortSpec::new("veth0", PortKind::System).interface_columns();
        assert_eq!(
            plain.to_json(),
            json!({"type": "", "options": ["map", []], "ofport_request": ["set", []], "mtu_request": ["set", []]})
        );
    }

    #[test]
    fn records_target_rows() {
        assert!(Record::OpenVSwitch.conditions().is_empty());
        assert_eq!(Record::Port("p".into()).table(), "Port");
        assert_eq!(
            Record::Interface("i".into()).not_found().to_string(),
            "ovsdb Interface row i does not exist"
        );
    }
}
