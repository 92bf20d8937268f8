//! Real-OVS test harness.
