//! Newline-delimited JSON frames, shared by the client transport and the server helper.
//!
//! A frame is one JSON text without raw newlines (compact serde_json output never has one:
//! newlines inside strings are escaped) followed by `\n`. Newline framing keeps the socket
//! readable with `socat - UNIX-CONNECT:/var/run/weft/cni.sock`.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Longest accepted frame in bytes, newline excluded. Generous because a GC request carries the
/// runtime's whole list of valid attachments.
pub const MAX_FRAME_LEN: usize = 64 * 1024 * 1024;

/// Errors reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The socket failed.
    #[error("socket i/o failed: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent more than the limit without a newline.
    #[error("frame longer than {limit} bytes")]
    TooLong {
        /// The limit in force.
        limit: usize,
    },
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed inside a frame after {0} bytes")]
    Truncated(usize),
    /// The peer closed the connection between frames.
    #[error("connection closed by peer")]
    Closed,
    /// A frame is not valid UTF-8.
    #[error("frame is not valid UTF-8")]
    NotUtf8,
    /// A message to send contains a raw newline and cannot be framed.
    #[error("message contains a raw newline and cannot be framed")]
    EmbeddedNewline,
}

/// Reads frames from a byte stream, never buffering more than the limit plus one byte.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: BufReader<R>,
    limit: usize,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader with the default limit [`MAX_FRAME_LEN`].
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, MAX_FRAME_LEN)
    }

    /// A reader rejecting frames longer than `limit` bytes.
    pub fn with_limit(inner: R, limit: usize) -> Self {
        Self {
            inner: BufReader::new(inner),
            limit,
            buf: Vec::new(),
        }
    }

    /// The next non-empty frame as text, or `None` when the peer closed cleanly between frames.
    pub async fn read_frame(&mut self) -> Result<Option<String>, FrameError> {
        loop {
            self.buf.clear();
            let max = u64::try_from(self.limit)
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            let n = (&mut self.inner)
                .take(max)
                .read_until(b'\n', &mut self.buf)
                .await?;
            if n == 0 {
                return Ok(None);
            }
            if self.buf.last() == Some(&b'\n') {
                self.buf.pop();
            } else if self.buf.len() > self.limit {
                return Err(FrameError::TooLong { limit: self.limit });
            } else {
                return Err(FrameError::Truncated(self.buf.len()));
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let text = std::str::from_utf8(&self.buf).map_err(|_| FrameError::NotUtf8)?;
            return Ok(Some(text.to_owned()));
        }
    }
}

/// Writes `msg` as one frame and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    msg: &str,
) -> Result<(), FrameError> {
    if msg.contains('\n') {
        return Err(FrameError::EmbeddedNewline);
    }
    let mut frame = Vec::with_capacity(msg.len() + 1);
    frame.extend_from_slice(msg.as_bytes());
    frame.push(b'\n');
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8], limit: usize) -> Vec<Result<Option<String>, String>> {
        let mut reader = FrameReader::with_limit(input, limit);
        let mut out = Vec::new();
        loop {
            let next = reader.read_frame().await.map_err(|e| e.to_string());
            let stop = !matches!(next, Ok(Some(_)));
            out.push(next);
            if stop {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn splits_on_newlines_and_skips_blank_lines() {
        let got = frames(b"{\"a\":1}\n\n  \n{\"b\":2}\n", 100).await;
        assert_eq!(
            got,
            vec![
                Ok(Some("{\"a\":1}".to_owned())),
                Ok(Some("{\"b\":2}".to_owned())),
                Ok(None)
            ]
        );
    }

    #[tokio::test]
    async fn enforces_the_limit() {
        assert_eq!(
            frames(b"12345\n", 5).await,
            vec![Ok(Some("12345".to_owned())), Ok(None)]
        );
        assert_eq!(
            frames(b"123456\n", 5).await,
            vec![Err("frame longer than 5 bytes".to_owned())]
        );
    }

    #[tokio::test]
    async fn reports_truncation_and_bad_utf8() {
        assert_eq!(
            frames(b"{\"a\":1}\n{\"b\"", 100).await,
            vec![
                Ok(Some("{\"a\":1}".to_owned())),
                Err("connection closed inside a frame after 4 bytes".to_owned())
            ]
        );
        assert_eq!(
            frames(b"\xff\xfe\n", 100).await,
            vec![Err("frame is not valid UTF-8".to_owned())]
        );
    }

    #[tokio::test]
    async fn writes_one_line_per_message() {
        let mut out = Vec::new();
        write_frame(&mut out, "{\"x\":\"a\\nb\"}").await.unwrap();
        write_frame(&mut out, "{}").await.unwrap();
        assert_eq!(out, b"{\"x\":\"a\\nb\"}\n{}\n");
        assert!(matches!(
            write_frame(&mut out, "{\n}").await,
            Err(FrameError::EmbeddedNewline)
        ));
    }
}
