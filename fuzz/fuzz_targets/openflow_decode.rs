//! The OpenFlow 1.5 decoders: the input is one message (8-byte header + body) handed to every
//! message decoder, and its body to the match, instruction, action and flow-description codecs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ovs_flows::codec;
use ovs_flows::ofp::messages::decode_flow_descs;
use ovs_flows::ofp::wire::{BundleCtrl, Frame, Header, Hello, MultipartReply};
use ovs_flows::ofp::{Features, OfpError, PacketIn, PortStatus};

fuzz_target!(|data: &[u8]| {
    let Some(header) = Header::parse(data) else {
        return;
    };
    let frame = Frame {
        header,
        body: data[8..].to_vec().into(),
    };
    let _ = Hello::decode(&frame);
    let _ = Features::decode(&frame);
    let _ = BundleCtrl::decode(&frame);
    let _ = MultipartReply::decode(&frame);
    let _ = PacketIn::decode(&frame).map(|p| p.matches());
    let _ = PortStatus::decode(&frame);
    if let Ok(err) = OfpError::decode(&frame) {
        let _ = err.name();
        let _ = err.offending_header();
        let _ = err.offending_bundle_inner();
    }
    let body = &data[8..];
    let _ = decode_flow_descs(body);
    if let Ok((m, _)) = codec::decode_match(body) {
        // What decodes re-encodes and decodes the same.
        let mut out = Vec::new();
        codec::encode_match(&m, &mut out);
        let again = codec::decode_match(&out).map(|(m, _)| m);
        assert_eq!(again.ok(), Some(m), "match does not round-trip");
    }
    let _ = codec::decode_instructions(body);
    let _ = codec::decode_actions(body);
});
