//! Pure codec tests (no OVS): every sample round-trips, and hostile bytes never panic.

mod flow_codec_support;

use flow_codec_support::{sample_actions, sample_flows, sample_matches, sample_nd_actions};
use ovs_flows::codec::{
    decode_actions, decode_instructions, decode_match, encode_actions, encode_instructions,
    encode_match, CodecError,
};
use ovs_flows::flow::{canonical_order, port, Action, Controller, Field, Match, SubField};

fn canonical(actions: &[Action]) -> Vec<Action> {
    canonical_order(actions)
        .into_iter()
        .map(|a| match a {
            Action::Output(port::CONTROLLER) => Action::Controller(Controller::default()),
            a => a.clone(),
        })
        .collect()
}

#[test]
fn matches_round_trip() {
    for m in sample_matches() {
        let mut buf = Vec::new();
        encode_match(&m, &mut buf);
        assert_eq!(buf.len() % 8, 0, "{m}");
        let (got, used) = decode_match(&buf).unwrap();
        assert_eq!(used, buf.len(), "{m}");
        assert_eq!(got, m, "{m}");
        // Trailing bytes after the match are not consumed.
        buf.extend_from_slice(&[0xaa; 8]);
        assert_eq!(decode_match(&buf).unwrap().1, used);
    }
}

#[test]
fn instructions_and_actions_round_trip() {
    for actions in sample_actions().into_iter().chain(sample_nd_actions()) {
        let mut buf = Vec::new();
        encode_instructions(&actions, &mut buf);
        assert_eq!(buf.len() % 8, 0);
        assert_eq!(decode_instructions(&buf).unwrap(), canonical(&actions));

        let bare: Vec<Action> = actions
            .iter()
            .filter(|a| !a.is_instruction())
            .cloned()
            .collect();
        let mut buf = Vec::new();
        encode_actions(&actions, &mut buf);
        assert_eq!(decode_actions(&buf).unwrap(), canonical(&bare));
    }
}

#[test]
fn empty_actions_are_no_instructions_and_print_drop() {
    let mut buf = Vec::new();
    encode_instructions(&[], &mut buf);
    assert!(buf.is_empty());
    assert_eq!(decode_instructions(&[]).unwrap(), vec![]);
    let flow = ovs_flows::flow::Flow::default();
    assert_eq!(flow.to_string(), "actions=drop");
}

#[test]
fn display_samples() {
    let m = Match::new()
        .tcp()
        .reg(0, 1)
        .tcp_dst(80)
        .ct_state(0x20, 0x01);
    assert_eq!(m.to_string(), "ct_state=-new+trk,tcp,reg0=0x1,tp_dst=80");
    assert_eq!(Match::new().xreg(1, 5).to_string(), "reg2=0,reg3=0x5");
    assert_eq!(
        Match::new().ct_state(0xff, 0).to_string(),
        "ct_state=new|est|rel|rpl|inv|trk|snat|dnat"
    );
    assert_eq!(
        Match::new().vlan_tci(0x0005, 0xffff).to_string(),
        "vlan_tci=0x0005"
    );
    assert_eq!(
        Match::new().in_port(port::LOCAL).to_string(),
        "in_port=LOCAL"
    );
    let load = Action::load(SubField::bits(Field::Reg(2), 4, 7), 5);
    assert_eq!(load.to_string(), "set_field:0x50/0xf0->reg2");
    assert_eq!(Action::note(&[1]).to_string(), "note:01.00.00.00.00.00");
}

#[test]
fn nd_fields_and_output_reg_print_like_ovs() {
    // Texts printed by `ovs-ofctl -O OpenFlow15 dump-flows` (OVS 3.1).
    let m = Match::new()
        .icmp6()
        .icmpv6_type(136)
        .nd_reserved(0x6000_0000)
        .nd_options_type(2);
    assert_eq!(
        m.to_string(),
        "icmp6,icmp_type=136,nd_reserved=1610612736,nd_options_type=2"
    );
    let actions = [
        (
            Action::set_field(Field::NdReserved, 0x6000_0000),
            "set_field:1610612736->nd_reserved",
        ),
        (
            Action::set_field(Field::NdOptionsType, 2),
            "set_field:2->nd_options_type",
        ),
        (
            Action::move_bits(
                SubField::bits(Field::Reg(0), 0, 7),
                SubField::full(Field::NdOptionsType),
            ),
            "move:NXM_NX_REG0[0..7]->ERICOXM_OF_ICMPV6_ND_OPTIONS_TYPE[]",
        ),
        (
            Action::move_bits(
                SubField::full(Field::NdReserved),
                SubField::full(Field::Reg(1)),
            ),
            "move:ERICOXM_OF_ICMPV6_ND_RESERVED[]->NXM_NX_REG1[]",
        ),
        (
            Action::OutputReg(SubField::full(Field::Reg(1))),
            "output:NXM_NX_REG1[]",
        ),
        (
            Action::OutputReg(SubField::bits(Field::Reg(1), 0, 15)),
            "output:NXM_NX_REG1[0..15]",
        ),
    ];
    for (a, text) in actions {
        assert_eq!(a.to_string(), text);
    }
}

#[test]
fn nd_fields_and_output_reg_wire_format() {
    // nd_reserved: OXM class ERICOXM_OF (0x1000), field 1, 4 bytes; nd_options_type field 2.
    let mut buf = Vec::new();
    encode_actions(
        &[
            Action::set_field(Field::NdReserved, 0x6000_0000),
            Action::set_field(Field::NdOptionsType, 2),
        ],
        &mut buf,
    );
    assert_eq!(
        buf,
        [
            0, 25, 0, 16, 0x10, 0x00, 0x02, 0x04, 0x60, 0, 0, 0, 0, 0, 0, 0, //
            0, 25, 0, 16, 0x10, 0x00, 0x04, 0x01, 2, 0, 0, 0, 0, 0, 0, 0,
        ]
    );
    // output:NXM_NX_REG1[] as NXAST_OUTPUT_REG (15): ofs_nbits 31, NXM_NX_REG1, max_len 65535.
    let reg1 = Action::OutputReg(SubField::full(Field::Reg(1)));
    let output_reg = [
        0xff, 0xff, 0, 24, 0, 0, 0x23, 0x20, 0, 15, 0, 31, 0, 1, 2, 4, 0xff, 0xff, 0, 0, 0, 0, 0, 0,
    ];
    let mut buf = Vec::new();
    encode_actions(std::slice::from_ref(&reg1), &mut buf);
    assert_eq!(buf, output_reg);
    // NXAST_OUTPUT_REG2 (32), as OVS sends for fields without a 32-bit header, decodes too.
    let output_reg2 = [
        0xff, 0xff, 0, 24, 0, 0, 0x23, 0x20, 0, 32, 0, 31, 0xff, 0xff, 0, 1, 2, 4, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(decode_actions(&output_reg2).unwrap(), vec![reg1]);
    // Non-zero padding is rejected, as OVS rejects it.
    let mut bad = output_reg;
    bad[23] = 1;
    assert!(matches!(
        decode_actions(&bad),
        Err(CodecError::BadValue { .. })
    ));
    let mut bad = output_reg2;
    bad[20] = 1;
    assert!(matches!(
        decode_actions(&bad),
        Err(CodecError::BadValue { .. })
    ));
}

#[test]
fn truncated_encodings_are_errors() {
    for m in sample_matches() {
        let mut buf = Vec::new();
        encode_match(&m, &mut buf);
        for cut in 0..buf.len() {
            assert!(decode_match(&buf[..cut]).is_err(), "{m} cut at {cut}");
        }
    }
    for actions in sample_actions().into_iter().chain(sample_nd_actions()) {
        for a in actions.iter().filter(|a| !a.is_instruction()) {
            let mut buf = Vec::new();
            encode_actions(std::slice::from_ref(a), &mut buf);
            for cut in 1..buf.len() {
                assert!(decode_actions(&buf[..cut]).is_err(), "{a} cut at {cut}");
            }
        }
    }
}

#[test]
fn unknown_elements_are_named() {
    // OXM class 0x0005 field 3, 4 bytes.
    let buf = [0, 1, 0, 12, 0, 5, 6, 4, 1, 2, 3, 4, 0, 0, 0, 0];
    match decode_match(&buf) {
        Err(CodecError::Unsupported { detail, .. }) => {
            assert!(
                detail.contains("0x0005") && detail.contains("field 3"),
                "{detail}"
            )
        }
        other => panic!("{other:?}"),
    }
    // Nicira action subtype 200.
    let buf = [
        0xff, 0xff, 0, 16, 0, 0, 0x23, 0x20, 0, 200, 0, 0, 0, 0, 0, 0,
    ];
    match decode_actions(&buf) {
        Err(CodecError::Unsupported { detail, .. }) => {
            assert!(detail.contains("subtype 200"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    // Another experimenter.
    let buf = [0xff, 0xff, 0, 16, 0, 0, 0x12, 0x34, 0, 1, 0, 0, 0, 0, 0, 0];
    let err = decode_actions(&buf).unwrap_err();
    assert!(err.to_string().contains("0x00001234"), "{err}");
    // Standard action type 11 (copy_ttl_out) is not supported.
    let err = decode_actions(&[0, 11, 0, 8, 0, 0, 0, 0]).unwrap_err();
    assert!(err.to_string().contains("type 11"), "{err}");
    // Write-actions instruction.
    let err = decode_instructions(&[0, 3, 0, 8, 0, 0, 0, 0]).unwrap_err();
    assert!(matches!(err, CodecError::Unsupported { .. }), "{err}");
}

/// xorshift64*: deterministic pseudo-random bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Decodes `buf` every way; whatever decodes must re-encode to something that decodes the same.
fn check_no_panic(buf: &[u8], ok: &mut usize) {
    if let Ok((m, used)) = decode_match(buf) {
        assert!(used <= buf.len());
        let mut again = Vec::new();
        encode_match(&m, &mut again);
        assert_eq!(decode_match(&again).unwrap().0, m);
        *ok += 1;
    }
    if let Ok(actions) = decode_instructions(buf) {
        let mut again = Vec::new();
        encode_instructions(&actions, &mut again);
        assert_eq!(decode_instructions(&again).unwrap(), canonical(&actions));
        *ok += 1;
    }
    if let Ok(actions) = decode_actions(buf) {
        let mut again = Vec::new();
        encode_actions(&actions, &mut again);
        assert_eq!(decode_actions(&again).unwrap(), actions);
        *ok += 1;
    }
}

#[test]
fn hostile_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut ok = 0;
    // Pure noise, with plausible headers now and then.
    for _ in 0..20_000 {
        let len = rng.below(96);
        let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if len >= 4 && rng.below(2) == 0 {
            buf[0] = 0;
            buf[1] = [0, 1, 4, 22, 25, 28][rng.below(6)];
            buf[2] = 0;
            buf[3] = (len as u8) & !7;
        }
        check_no_panic(&buf, &mut ok);
    }
    // Mutations of valid encodings.
    let mut valid = Vec::new();
    for f in sample_flows() {
        let mut m = Vec::new();
        encode_match(&f.matches, &mut m);
        valid.push(m);
        let mut i = Vec::new();
        encode_instructions(&f.actions, &mut i);
        valid.push(i.clone());
        if i.len() > 8 {
            valid.push(i[8..].to_vec());
        }
    }
    let mut mutated_ok = 0;
    for _ in 0..30_000 {
        let mut buf = valid[rng.below(valid.len())].clone();
        if buf.is_empty() {
            continue;
        }
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(buf.len());
            buf[at] = rng.next() as u8;
        }
        if rng.below(4) == 0 {
            buf.truncate(rng.below(buf.len() + 1));
        }
        let before = ok;
        check_no_panic(&buf, &mut ok);
        if ok > before {
            mutated_ok += 1;
        }
    }
    // The mutations exercised both decoding paths, not just early rejection.
    assert!(
        mutated_ok > 1_000,
        "only {mutated_ok} mutated inputs decoded"
    );
    assert!(ok > mutated_ok);
}
