//! Request checks the agent repeats although the plugin made them: the CNI socket is root-only,
//! but any root process can speak the RPC directly, so the agent trusts no field it turns into
//! names, paths or OVSDB values.

use weft_cni::env::{validate_container_id, validate_netns};

/// A request field that breaks the CNI environment rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {variable}: {reason}")]
pub struct InvalidField {
    /// The CNI variable the field carries (`CNI_CONTAINERID`, `CNI_NETNS`).
    pub variable: &'static str,
    /// The rule it breaks, naming the value.
    pub reason: String,
}

/// Checks the container id against the spec's charset and the netns path (if any) for being
/// absolute without `..` components, as the plugin does.
pub fn check_attachment_fields(
    container_id: &str,
    netns: Option<&str>,
) -> Result<(), InvalidField> {
    validate_container_id(container_id).map_err(|e| InvalidField {
        variable: "CNI_CONTAINERID",
        reason: e.to_string(),
    })?;
    if let Some(netns) = netns {
        validate_netns(netns).map_err(|e| InvalidField {
            variable: "CNI_NETNS",
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_the_plugin_rejects() {
        assert!(check_attachment_fields("c0ffee", Some("/var/run/netns/p")).is_ok());
        assert!(check_attachment_fields("c0ffee", None).is_ok());
        for (id, netns, variable) in [
            ("../../etc", None, "CNI_CONTAINERID"),
            ("a b", None, "CNI_CONTAINERID"),
            ("", None, "CNI_CONTAINERID"),
            ("c1", Some("relative/ns"), "CNI_NETNS"),
            ("c1", Some("/run/netns/../../proc/1/ns/net"), "CNI_NETNS"),
        ] {
            let err = check_attachment_fields(id, netns).unwrap_err();
            assert_eq!(err.variable, variable, "{id} {netns:?}");
        }
    }
}
