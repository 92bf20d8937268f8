//! Every key, name and number Weft writes into shared state, in one place: OVSDB external_ids,
//! Node annotations, OVS port names, routing tables and priorities, nf_tables names. Changing one
//! of these orphans what a running node already has, so they are stable across releases.

// ---- OVSDB external_ids ------------------------------------------------------------------------

/// external_ids key marking objects Weft owns.
pub const OWNER_KEY: &str = "weft-owner";
/// external_ids value of [`OWNER_KEY`].
pub const OWNER_VALUE: &str = "weft-agent";

/// Bridge external id holding the restart round of the installed flows.
pub const ROUND_KEY: &str = "weft-round";
/// Bridge external id recording the applied traffic mode.
pub const MODE_KEY: &str = "weft-mode";
/// Bridge external id recording the applied MTU plan (JSON).
pub const MTU_PLAN_KEY: &str = "weft-mtu-plan";
/// Bridge external id recording the transport interface (empty when `mtu` was configured and
/// none was found).
pub const TRANSPORT_KEY: &str = "weft-transport";

/// external_ids key on the uplink and internal ports: the NIC's original name.
pub const UPLINK_OF_KEY: &str = "weft-uplink-of";

/// Pod port external_ids key: the pod's Kubernetes namespace.
pub const KEY_NAMESPACE: &str = "weft-pod-namespace";
/// Pod port external_ids key: the pod's Kubernetes name.
pub const KEY_NAME: &str = "weft-pod-name";
/// Pod port external_ids key: the runtime's container id.
pub const KEY_CONTAINER_ID: &str = "weft-container-id";
/// Pod port external_ids key: the interface name inside the pod.
pub const KEY_IFNAME: &str = "weft-ifname";
/// Pod port external_ids key: the pod's addresses with prefix lengths, comma-separated.
pub const KEY_IPS: &str = "weft-ips";
/// Pod port external_ids key: the MAC of the pod's interface.
pub const KEY_MAC: &str = "weft-mac";
/// Pod port external_ids key: the pod's network namespace path.
pub const KEY_NETNS: &str = "weft-netns";

// ---- OVS ports ---------------------------------------------------------------------------------

/// The tunnel port's name.
pub const TUNNEL_PORT: &str = "weft-tun0";

// ---- Kubernetes --------------------------------------------------------------------------------

/// The Node annotation carrying the agent's transport (tunnel endpoint) address.
pub const TRANSPORT_ADDRESS_ANNOTATION: &str = "weft.dev/transport-address";
/// The Node annotation carrying the agent's uplink MAC (whenever the uplink is attached).
pub const UPLINK_MAC_ANNOTATION: &str = "weft.dev/uplink-mac";
/// Field manager the agent writes with.
pub const FIELD_MANAGER: &str = "weft-agent";

// ---- Routing (routes, rules, neighbours) -------------------------------------------------------

/// Route protocol (`rtm_protocol`) of every route Weft installs: 0x57 ('W'). Not in iproute2's
/// `rt_protos` (0-18, 42 babel, 99 openr, 186-192) nor used by Calico (80) or Bird (12); shows
/// as `proto 87` in `ip route`. systemd-networkd with `ManageForeignRoutes=no` leaves such
/// routes alone. The same value tags rules (`FRA_PROTOCOL`) and neighbours (`NDA_PROTOCOL`).
pub const WEFT_PROTOCOL: u8 = 0x57;

/// Weft's routing table id: 0x5746 ("WF"), far from the 1-252 range admins number tables in and
/// from the reserved 253-255.
pub const WEFT_TABLE: u32 = 0x5746;

/// The main table.
pub const MAIN_TABLE: u32 = 254;

/// First policy-rule priority reserved for Weft. The range sits before the `main` rule (32766),
/// after anything usual admins and other CNIs use (Cilium 9-100 and 2004, Calico 100-200).
pub const RULE_PRIORITY_MIN: u32 = 30700;
/// Last policy-rule priority reserved for Weft.
pub const RULE_PRIORITY_MAX: u32 = 30799;
/// Rule `from POD_CIDR lookup WEFT_TABLE` (pod egress; noEncap and egress gateways fill the
/// table later).
pub const RULE_PRIORITY_POD_EGRESS: u32 = 30700;

// ---- nf_tables ---------------------------------------------------------------------------------

/// Name of the table Weft owns in each family (`ip weft`, `ip6 weft`).
pub const NFT_TABLE: &str = "weft";
/// Name of its nat chain.
pub const NFT_CHAIN: &str = "postrouting";
