//! `weft`: the CNI plugin binary. Reads the CNI environment and stdin, forwards to the agent.

#![forbid(unsafe_code)]

fn main() {}
