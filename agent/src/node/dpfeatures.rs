//! The datapath check at start: the features the pipeline needs (derived from its flows by
//! [`ovs_flows::datapath::requirements`]) against what ovs-vswitchd found in the bridge's
//! datapath (`dpif/show-dp-features`). A missing one refuses the start naming the feature, the
//! datapath type and a flow that needs it, instead of a bundle rejected with a bare OpenFlow
//! error code (as the kernel datapath without the IPv6 ND extension did).

use std::time::Duration;

use ovs_flows::datapath::{requirements, DatapathFeatures, Feature};
use ovs_flows::flow::Flow;

use crate::api::unixctl;
use crate::config::AgentConfig;

/// How long ovs-vswitchd may take to list the features.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A feature the pipeline needs and the datapath lacks.
#[derive(Debug, thiserror::Error)]
#[error(
    "bridge {bridge} (datapath_type {datapath}): the datapath lacks \"{feature}\" \
     (ovs-appctl dpif/show-dp-features {bridge}), needed by flow {flow}"
)]
pub struct MissingFeature {
    /// The bridge.
    pub bridge: String,
    /// Its datapath type.
    pub datapath: String,
    /// The feature, as ovs-vswitchd titles it.
    pub feature: Feature,
    /// The first flow needing it.
    pub flow: String,
}

/// Checks `flows` against the bridge's datapath. When ovs-vswitchd cannot be asked (no control
/// socket), logs it and lets the flow installation itself decide.
pub async fn check(config: &AgentConfig, flows: &[Flow]) -> Result<(), MissingFeature> {
    let needs = requirements(flows);
    let bridge = config.ovs_bridge.as_str();
    let text = match unixctl::vswitchd_ctl(&config.ovs_run_dir) {
        Ok(ctl) => unixctl::call(&ctl, "dpif/show-dp-features", &[bridge], TIMEOUT).await,
        Err(err) => Err(err),
    };
    let features = match text {
        Ok(text) => DatapathFeatures::parse(&text),
        Err(err) => {
            tracing::warn!(%bridge, error = %err, "cannot list the datapath's features; not checked");
            return Ok(());
        }
    };
    if let Some((feature, flow)) = features.missing(&needs).into_iter().next() {
        return Err(MissingFeature {
            bridge: bridge.to_string(),
            datapath: config.ovs_datapath_type.as_str().to_string(),
            feature,
            flow: flow.to_string(),
        });
    }
    tracing::info!(%bridge, needs = ?needs.keys().map(|f| f.title()).collect::<Vec<_>>(), "datapath has every feature the pipeline needs");
    Ok(())
}
