//! The MTU plan, the traffic mode and the transport-interface choice: pure planners that live in
//! [`weft_plan`] (`mode`, `mtu`, `transport`), re-exported here under their old path.

pub use weft_plan::mode::{Family, TrafficMode, TunnelType, IPV6_EXTRA_OVERHEAD};
pub use weft_plan::mtu::{plan, MtuError, MtuInput, MtuPlan, MIN_POD_MTU};
pub use weft_plan::transport::{
    select_transport, HostInterface, TransportError, TransportSelector,
};
