//! Native OVSDB (RFC 7047) client: transact, monitor_cond with update2 into a local cache,
//! echo handling, reconnect with full resync, and typed helpers for the rows Weft owns.
