//! Weft's real-OVS test harness, shared by integration tests, the lab and the e2e suite.
//!
//! Everything here is real: a fresh network namespace per instance, a private `ovsdb-server` and
//! `ovs-vswitchd` (userspace `netdev` datapath by default, since test machines have no OVS kernel
//! module; `WEFT_TEST_DATAPATH=system` for the kernel datapath, see [`datapath`]), each with its
//! own run directory. Processes are stopped by the pid this harness started, and
//! [`ovs::OvsInstance`]'s `Drop` removes processes, namespace and files even when a test panics.
//! Names embed the test process id and a counter, so tests run in parallel, and an instance left
//! behind by a killed test process is swept by the next run.

#![forbid(unsafe_code)]

pub mod apiserver;
pub mod churn;
pub mod cluster;
pub mod cmd;
pub mod containerd;
pub mod cri;
pub mod daemonset;
pub mod datapath;
pub mod images;
pub mod kubeproxy;
pub mod netns;
pub mod node;
pub mod ovs;
pub mod podman;
pub mod services;
pub mod spoof;

pub use apiserver::ApiServer;
pub use datapath::Datapath;
pub use ovs::OvsInstance;
