//! Weft's OpenFlow pipeline as plain data, and a native OpenFlow 1.5 (+ Nicira extensions)
//! codec and client spoken over the bridge management socket.

#![forbid(unsafe_code)]

pub mod codec;
pub mod datapath;
pub mod flow;
pub mod ofp;
pub mod pipeline;
