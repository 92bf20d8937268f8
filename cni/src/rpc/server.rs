//! The agent side of the framing: feeds frames from a connection to a jsonrpsee `Methods` set.
//!
//! jsonrpsee's own server speaks HTTP/WebSocket only, so the agent serves the newline-delimited
//! protocol with `Methods::raw_json_request` through these helpers:
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use jsonrpsee::RpcModule;
//! use weft_cni::rpc::{method, server, CniRequest, CniResponse};
//! use weft_cni::error::CniError;
//!
//! let mut module = RpcModule::new(());
//! module
//!     .register_async_method(method::ADD, |params, _ctx, _ext| async move {
//!         let request: CniRequest = params.one()?;
//!         // ... wire the pod; on failure return Err(CniError::new(..).into()) ...
//!         Ok::<_, jsonrpsee::types::ErrorObjectOwned>(CniResponse::default())
//!     })
//!     .expect("method registered once");
//! let listener = tokio::net::UnixListener::bind("/var/run/weft/cni.sock")?;
//! server::serve(listener, module).await;
//! # Ok(()) }
//! ```
//!
//! Requests on one connection are handled concurrently; answers are written as they complete
//! (JSON-RPC ids pair them up). A method learns that its caller went away (the plugin timed out
//! or was killed by its runtime: the connection reached end of file) through [`peer_gone`]; the
//! agent then cancels and rolls back an ADD instead of finishing it for nobody. A client must
//! therefore keep its connection open until it has its answers (the plugin does).

use std::time::Duration;

use jsonrpsee::Methods;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};

use super::framing::{write_frame, FrameError, FrameReader};

/// Answer to a frame that is not JSON.
const PARSE_ERROR: &str =
    r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#;
/// Answer to JSON that is not a single JSON-RPC request.
const INVALID_REQUEST: &str =
    r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid request"},"id":null}"#;

tokio::task_local! {
    /// Turns `true` once the peer of the connection the current request came on closed it.
    static PEER_GONE: watch::Receiver<bool>;
}

/// Inside a method served by [`serve_connection`]: a receiver that turns `true` once the caller
/// closed its connection (gave up on the answer). `None` outside such a call (tests calling the
/// method directly).
pub fn peer_gone() -> Option<watch::Receiver<bool>> {
    PEER_GONE.try_with(watch::Receiver::clone).ok()
}

/// Requests received by [`serve_connection`] in this process whose answers are not written
/// yet (a stopping server waits for them: [`wait_answers_written`]).
static UNWRITTEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts one request in [`UNWRITTEN`] until dropped (answer written, or the socket broke).
struct Unwritten;

impl Unwritten {
    fn new() -> Self {
        UNWRITTEN.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Unwritten
    }
}

impl Drop for Unwritten {
    fn drop(&mut self) {
        UNWRITTEN.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Requests received in this process whose answers are not written yet.
pub fn unwritten_answers() -> usize {
    UNWRITTEN.load(std::sync::atomic::Ordering::Acquire)
}

/// Waits (polling, at most `timeout`) until every request received in this process has its
/// answer written or its socket broken, so a stopping server does not exit with answers still
/// queued. Returns how many are still unwritten.
pub async fn wait_answers_written(timeout: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + timeout;
    while unwritten_answers() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    unwritten_answers()
}

/// Serves one connection until the peer closes it and every answer has been written.
///
/// Returns the framing error that ended the connection early, if any (oversized frame, broken
/// socket); answers to requests already received are still attempted.
pub async fn serve_connection<S>(stream: S, methods: impl Into<Methods>) -> Result<(), FrameError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let methods = methods.into();
    let (read, mut write) = tokio::io::split(stream);
    let mut reader = FrameReader::new(read);
    let (answers, mut outbox) = mpsc::channel::<(String, Unwritten)>(16);
    let (gone, gone_rx) = watch::channel(false);

    let writer = tokio::spawn(async move {
        while let Some((answer, unwritten)) = outbox.recv().await {
            let written = write_frame(&mut write, &answer).await;
            drop(unwritten);
            written?;
        }
        Ok::<(), FrameError>(())
    });

    let read_result = loop {
        match reader.read_frame().await {
            Ok(Some(frame)) => {
                let methods = methods.clone();
                let answers = answers.clone();
                let gone_rx = gone_rx.clone();
                let unwritten = Unwritten::new();
                tokio::spawn(async move {
                    let answer = PEER_GONE.scope(gone_rx, answer(&methods, &frame)).await;
                    // The writer only goes away when the socket broke; nothing left to do then.
                    let _ = answers.send((answer, unwritten)).await;
                });
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    // End of file or a broken socket: nobody will read the answers still being worked on.
    gone.send_replace(true);
    drop(answers);
    let write_result = writer
        .await
        .unwrap_or_else(|join| Err(FrameError::Io(std::io::Error::other(join.to_string()))));
    read_result.and(write_result)
}

/// Accepts connections on `listener` forever, serving each on its own task.
///
/// Accept errors (for example running out of file descriptors) are retried after a short pause
/// instead of ending the server; per-connection errors end only that connection.
pub async fn serve(listener: UnixListener, methods: impl Into<Methods>) {
    let methods = methods.into();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let methods = methods.clone();
                tokio::spawn(async move {
                    let _ = serve_connection(stream, methods).await;
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn answer(methods: &Methods, frame: &str) -> String {
    match methods.raw_json_request(frame, 1).await {
        Ok((response, _subscription)) => response.get().to_owned(),
        Err(_) if serde_json::from_str::<serde::de::IgnoredAny>(frame).is_ok() => {
            INVALID_REQUEST.to_owned()
        }
        Err(_) => PARSE_ERROR.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonrpsee::RpcModule;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    #[tokio::test]
    async fn answers_requests_and_malformed_frames_in_order_of_completion() {
        let mut module = RpcModule::new(());
        module
            .register_method("echo", |params, _, _| params.one::<String>())
            .unwrap();
        let (client, server) = tokio::io::duplex(4096);
        let served = tokio::spawn(serve_connection(server, module));

        let (read, mut write) = tokio::io::split(client);
        let mut lines = BufReader::new(read).lines();
        write
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\",\"params\":[\"hi\"]}\n")
            .await
            .unwrap();
        let line = lines.next_line().await.unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["result"], "hi");
        assert_eq!(v["id"], 1);

        write.write_all(b"not json\n").await.unwrap();
        assert_eq!(lines.next_line().await.unwrap().unwrap(), PARSE_ERROR);
        write.write_all(b"[1,2]\n").await.unwrap();
        assert_eq!(lines.next_line().await.unwrap().unwrap(), INVALID_REQUEST);
        write
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"nope\"}\n")
            .await
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(v["error"]["code"], -32601);

        write.shutdown().await.unwrap();
        assert!(served.await.unwrap().is_ok());
        assert_eq!(lines.next_line().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_method_learns_that_its_caller_closed_the_connection() {
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<bool>();
        let seen_tx = std::sync::Mutex::new(Some(seen_tx));
        let mut module = RpcModule::new(seen_tx);
        module
            .register_async_method("wait", |_, ctx, _| async move {
                let mut gone = peer_gone().expect("served by serve_connection");
                let closed =
                    tokio::time::timeout(std::time::Duration::from_secs(5), gone.wait_for(|g| *g))
                        .await
                        .is_ok();
                if let Some(tx) = ctx.lock().unwrap().take() {
                    let _ = tx.send(closed);
                }
                Ok::<_, jsonrpsee::types::ErrorObjectOwned>(())
            })
            .unwrap();
        let (client, server) = tokio::io::duplex(4096);
        let served = tokio::spawn(serve_connection(server, module));
        let (_read, mut write) = tokio::io::split(client);
        write
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"wait\"}\n")
            .await
            .unwrap();
        write.shutdown().await.unwrap();
        assert!(seen_rx.await.unwrap(), "the method saw the caller go");
        let _ = served.await;
        assert!(peer_gone().is_none(), "no connection outside a served call");
    }
}
