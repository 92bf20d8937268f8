//! A native client for OVS's unixctl protocol (what `ovs-appctl` speaks): JSON-RPC 1.0 over the
//! daemon's control socket, one request `{"method", "params", "id"}` answered by one
//! `{"result", "error", "id"}`. `params` are strings; the result is text.
//!
//! The control socket of ovs-vswitchd is `RUNDIR/ovs-vswitchd.PID.ctl`, PID read from the pid
//! file `RUNDIR/ovs-vswitchd.pid` ([`vswitchd_ctl`]); a daemon started with an explicit
//! `--unixctl=RUNDIR/ovs-vswitchd.ctl` (as the test harness does) is found by that name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Largest reply accepted (a trace of a long pipeline is some tens of KiB).
pub const MAX_REPLY: usize = 16 * 1024 * 1024;

/// Errors talking to a unixctl socket.
#[derive(Debug, thiserror::Error)]
pub enum UnixctlError {
    /// Neither the pid file nor a control socket could be found.
    #[error("ovs-vswitchd control socket not found in {rundir}: {reason}")]
    NotFound {
        /// The OVS run directory.
        rundir: PathBuf,
        /// What was looked for.
        reason: String,
    },
    /// Connecting, writing or reading failed.
    #[error("unixctl {socket}: {source}")]
    Io {
        /// The control socket.
        socket: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon did not answer in time.
    #[error("unixctl {socket}: no answer to {command} within {timeout:?}")]
    Timeout {
        /// The control socket.
        socket: PathBuf,
        /// The command.
        command: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The reply is not a JSON-RPC 1.0 response.
    #[error("unixctl {socket}: malformed reply to {command}: {reason}")]
    Protocol {
        /// The control socket.
        socket: PathBuf,
        /// The command.
        command: String,
        /// What is wrong.
        reason: String,
    },
    /// The daemon answered with an error (the command's own message, e.g. a bad flow).
    #[error("{command}: {message}")]
    Command {
        /// The command.
        command: String,
        /// The daemon's message.
        message: String,
    },
}

/// Finds ovs-vswitchd's control socket in `rundir`: `ovs-vswitchd.PID.ctl` with PID from
/// `ovs-vswitchd.pid`, else `ovs-vswitchd.ctl`.
pub fn vswitchd_ctl(rundir: &Path) -> Result<PathBuf, UnixctlError> {
    let pidfile = rundir.join("ovs-vswitchd.pid");
    let mut tried = Vec::new();
    match std::fs::read_to_string(&pidfile) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(pid) => {
                let ctl = rundir.join(format!("ovs-vswitchd.{pid}.ctl"));
                if ctl.exists() {
                    return Ok(ctl);
                }
                tried.push(ctl.display().to_string());
            }
            Err(_) => tried.push(format!("{} (no pid in it)", pidfile.display())),
        },
        Err(e) => tried.push(format!("{} ({e})", pidfile.display())),
    }
    let plain = rundir.join("ovs-vswitchd.ctl");
    if plain.exists() {
        return Ok(plain);
    }
    tried.push(plain.display().to_string());
    Err(UnixctlError::NotFound {
        rundir: rundir.to_path_buf(),
        reason: format!("tried {}", tried.join(", ")),
    })
}

/// Runs one unixctl command on `socket` and returns its text output.
pub async fn call(
    socket: &Path,
    command: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<String, UnixctlError> {
    match tokio::time::timeout(timeout, exchange(socket, command, args)).await {
        Ok(result) => result,
        Err(_) => Err(UnixctlError::Timeout {
            socket: socket.to_path_buf(),
            command: command.to_string(),
            timeout,
        }),
    }
}

async fn exchange(socket: &Path, command: &str, args: &[&str]) -> Result<String, UnixctlError> {
    let io = |source| UnixctlError::Io {
        socket: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket).await.map_err(io)?;
    let request = json!({"method": command, "params": args, "id": 0});
    stream
        .write_all(request.to_string().as_bytes())
        .await
        .map_err(io)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(reply) = first_value(&buf) {
            return interpret(socket, command, reply);
        }
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(UnixctlError::Protocol {
                socket: socket.to_path_buf(),
                command: command.to_string(),
                reason: format!("connection closed after {} bytes", buf.len()),
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REPLY {
            return Err(UnixctlError::Protocol {
                socket: socket.to_path_buf(),
                command: command.to_string(),
                reason: format!("reply larger than {MAX_REPLY} bytes"),
            });
        }
    }
}

/// The first complete JSON value in `buf`, if it holds one yet.
fn first_value(buf: &[u8]) -> Option<Result<Value, String>> {
    let mut stream = serde_json::Deserializer::from_slice(buf).into_iter::<Value>();
    match stream.next()? {
        Ok(value) => Some(Ok(value)),
        Err(e) if e.is_eof() => None,
        Err(e) => Some(Err(e.to_string())),
    }
}

/// Turns a JSON-RPC 1.0 response into the command's output. Pure.
fn interpret(
    socket: &Path,
    command: &str,
    reply: Result<Value, String>,
) -> Result<String, UnixctlError> {
    let protocol = |reason: String| UnixctlError::Protocol {
        socket: socket.to_path_buf(),
        command: command.to_string(),
        reason,
    };
    let reply = reply.map_err(protocol)?;
    let error = reply.get("error").filter(|e| !e.is_null());
    if let Some(error) = error {
        let message = error
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| error.to_string());
        return Err(UnixctlError::Command {
            command: command.to_string(),
            message: message.trim_end().to_string(),
        });
    }
    match reply.get("result") {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(other) => Err(protocol(format!("result is not text: {other}"))),
        None => Err(protocol("no result and no error".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A fake daemon answering one connection with `reply`, in pieces.
    async fn fake(
        reply: &'static [u8],
    ) -> (tempfile::TempDir, PathBuf, tokio::task::JoinHandle<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.ctl");
        let listener = UnixListener::bind(&path).unwrap();
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = conn.read(&mut buf).await.unwrap();
            for piece in reply.chunks(7) {
                conn.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (dir, path, task)
    }

    #[tokio::test]
    async fn sends_json_rpc_and_reads_a_split_reply() {
        let (_dir, path, task) =
            fake(br#"{"id":0,"result":"line 1\nline 2\n","error":null}"#).await;
        let out = call(
            &path,
            "ofproto/trace",
            &["br0", "in_port=1"],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(out, "line 1\nline 2\n");
        let sent: Value = serde_json::from_str(&task.await.unwrap()).unwrap();
        assert_eq!(
            sent,
            json!({"method": "ofproto/trace", "params": ["br0", "in_port=1"], "id": 0})
        );
    }

    #[tokio::test]
    async fn command_errors_and_garbage_are_reported() {
        let (_dir, path, _task) =
            fake(br#"{"id":0,"result":null,"error":"br9: unknown bridge\n"}"#).await;
        let err = call(&path, "ofproto/trace", &["br9"], Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "ofproto/trace: br9: unknown bridge");
        let (_dir, path, _task) = fake(b"{\"id\":0,\"res").await;
        let err = call(&path, "version", &[], Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("connection closed after"), "{err}");
        let (_dir, path, _task) = fake(b"]]").await;
        let err = call(&path, "version", &[], Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("malformed reply to version"),
            "{err}"
        );
    }

    #[test]
    fn control_socket_from_pidfile_then_plain_name() {
        let dir = tempfile::tempdir().unwrap();
        let err = vswitchd_ctl(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ovs-vswitchd.pid"), "{err}");
        std::fs::write(dir.path().join("ovs-vswitchd.pid"), "4242\n").unwrap();
        std::fs::write(dir.path().join("ovs-vswitchd.ctl"), "").unwrap();
        assert_eq!(
            vswitchd_ctl(dir.path()).unwrap(),
            dir.path().join("ovs-vswitchd.ctl")
        );
        std::fs::write(dir.path().join("ovs-vswitchd.4242.ctl"), "").unwrap();
        assert_eq!(
            vswitchd_ctl(dir.path()).unwrap(),
            dir.path().join("ovs-vswitchd.4242.ctl")
        );
    }
}
