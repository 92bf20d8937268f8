//! The agent's CNI socket as a peer sees it: arbitrary bytes go through the newline framing
//! (`weft_cni::rpc::server::serve_connection`) into the agent's real jsonrpsee methods
//! (`CniService::rpc_module`, not bootstrapped: every request is decoded into a `CniRequest` and
//! then answered "try again later"), and every answer must be one JSON line.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_agent::cniserver::CniService;
use weft_cni::rpc::framing::FrameReader;
use weft_cni::rpc::{server, CniRequest};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime builds")
    })
}

fuzz_target!(|data: &[u8]| {
    // The decoding the methods do, on its own.
    let _ = serde_json::from_slice::<CniRequest>(data);

    runtime().block_on(async {
        // The framing alone, with a small limit so oversized frames are reached.
        let mut reader = FrameReader::with_limit(data, 4096);
        while let Ok(Some(_)) = reader.read_frame().await {}

        let service = CniService::new();
        let (mut client, server_end) = tokio::io::duplex(64 * 1024);
        let served = tokio::spawn(server::serve_connection(server_end, service.rpc_module()));
        let writer = async {
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            let mut answers = Vec::new();
            let _ = client.read_to_end(&mut answers).await;
            answers
        };
        let answers = writer.await;
        let _ = served.await;
        for line in answers.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(
                serde_json::from_slice::<serde_json::Value>(line).is_ok(),
                "answer is not JSON: {:?}",
                String::from_utf8_lossy(line)
            );
        }
    });
});
