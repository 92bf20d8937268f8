//! The OVSDB client's decoding: the JSON-RPC framer fed in chunks (the first input byte picks
//! the chunk size), message classification, and every value applied to a monitor cache as an
//! `update2` (and as the initial monitor reply) under a small Open_vSwitch schema; datums and
//! schemas decoded on their own.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use weft_agent::ovsdb::rpc::{Framer, Message};
use weft_agent::ovsdb::schema::DbSchema;
use weft_agent::ovsdb::{Cache, Datum, MonitorSpec};

fn schema() -> &'static DbSchema {
    static SCHEMA: OnceLock<DbSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        DbSchema::from_json(&json!({"name": "Open_vSwitch", "version": "8.3.1", "tables": {
            "Open_vSwitch": {"columns": {
                "bridges": {"type": {"key": {"type": "uuid", "refTable": "Bridge"}, "min": 0, "max": "unlimited"}},
                "external_ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}
            }},
            "Bridge": {"columns": {
                "name": {"type": "string"},
                "ports": {"type": {"key": {"type": "uuid", "refTable": "Port"}, "min": 0, "max": "unlimited"}},
                "datapath_type": {"type": "string"}
            }},
            "Interface": {"columns": {
                "name": {"type": "string"},
                "type": {"type": "string"},
                "ofport": {"type": {"key": "integer", "min": 0, "max": 1}},
                "mtu_request": {"type": {"key": {"type": "integer", "minInteger": 1}, "min": 0, "max": 1}},
                "options": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
                "external_ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
                "error": {"type": {"key": "string", "min": 0, "max": 1}},
                "admin_state": {"type": {"key": {"type": "string", "enum": ["set", ["up", "down"]]}, "min": 0, "max": 1}},
                "link_speed": {"type": {"key": "integer", "min": 0, "max": 1}},
                "bfd_status": {"type": {"key": "string", "value": "boolean", "min": 0, "max": "unlimited"}},
                "statistics": {"type": {"key": "string", "value": "real", "min": 0, "max": "unlimited"}}
            }},
            "Port": {"columns": {
                "name": {"type": "string"},
                "interfaces": {"type": {"key": {"type": "uuid", "refTable": "Interface"}, "min": 1, "max": "unlimited"}},
                "tag": {"type": {"key": {"type": "integer", "minInteger": 0, "maxInteger": 4095}, "min": 0, "max": 1}}
            }}
        }}))
        .expect("the fuzz schema is valid")
    })
}

fn spec() -> MonitorSpec {
    MonitorSpec::none()
        .table("Open_vSwitch", &["bridges", "external_ids"])
        .table("Bridge", &["name", "ports", "datapath_type"])
        .table(
            "Interface",
            &[
                "name",
                "type",
                "ofport",
                "mtu_request",
                "options",
                "external_ids",
                "error",
                "admin_state",
                "link_speed",
                "bfd_status",
                "statistics",
            ],
        )
        .table("Port", &["name", "interfaces", "tag"])
}

fn apply(cache: &mut Cache, value: &Value) {
    let _ = Datum::from_json(value);
    let _ = DbSchema::from_json(value);
    // An update2 notification's params are [monitor-id, updates]; a monitor reply is the
    // updates object itself.
    let updates = value.get(1).unwrap_or(value);
    let _ = cache.apply_update2(updates, schema());
    let mut fresh = Cache::default();
    let _ = fresh.reset(&spec(), value, schema());
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut framer = Framer::new(64 * 1024);
    let mut cache = Cache::default();
    let _ = cache.reset(&spec(), &json!({}), schema());
    for piece in data.chunks(chunk) {
        framer.push(piece);
        loop {
            match framer.next_value() {
                Ok(Some(value)) => {
                    apply(&mut cache, &value);
                    if let Ok(Message::Notification { params, .. }) = Message::from_value(value) {
                        apply(&mut cache, &params);
                    }
                }
                Ok(None) => break,
                // A framing error ends the connection in the client: stop here too.
                Err(_) => return,
            }
        }
        assert!(
            framer.pending() <= 64 * 1024 + chunk,
            "framer buffers past its limit"
        );
    }
});
