//! JSON-RPC 1.0 as OVSDB speaks it: an incremental framer that cuts a byte stream into
//! top-level JSON values (bounded in size), and the three message shapes.
//!
//! The framer tracks string/escape state and bracket depth byte by byte, so each byte is looked at
//! once however the stream is split; a complete value is then parsed with `serde_json`. This is
//! the same approach ovsdb-server's own parser takes and avoids re-parsing a large partial message
//! on every read, which a plain `StreamDeserializer` retry would do.

use serde_json::{json, Value};

use super::datum::short;
use super::error::{OvsdbError, Result};

/// Cuts a byte stream into JSON values.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    /// Next byte to scan.
    pos: usize,
    /// Start of the value being scanned, if inside one.
    start: Option<usize>,
    depth: usize,
    in_string: bool,
    escape: bool,
    max: usize,
}

impl Framer {
    /// A framer refusing values longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        Framer {
            buf: Vec::new(),
            pos: 0,
            start: None,
            depth: 0,
            in_string: false,
            escape: false,
            max,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes of a value started but not finished.
    pub fn pending(&self) -> usize {
        self.start.map_or(0, |s| self.buf.len() - s)
    }

    /// The next complete value, `None` if more bytes are needed.
    pub fn next_value(&mut self) -> Result<Option<Value>> {
        while self.pos < self.buf.len() {
            let byte = self.buf[self.pos];
            let Some(start) = self.start else {
                match byte {
                    b' ' | b'\t' | b'\n' | b'\r' => {}
                    b'{' | b'[' => {
                        self.start = Some(self.pos);
                        self.depth = 1;
                    }
                    other => {
                        return Err(OvsdbError::MalformedFrame {
                            reason: format!("unexpected byte 0x{other:02x} between messages"),
                        })
                    }
                }
                self.pos += 1;
                continue;
            };
            self.pos += 1;
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if byte == b'\\' {
                    self.escape = true;
                } else if byte == b'"' {
                    self.in_string = false;
                }
            } else {
                match byte {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            return self.finish(start).map(Some);
                        }
                    }
                    _ => {}
                }
            }
            if self.pos - start > self.max {
                return Err(OvsdbError::FrameTooLarge { limit: self.max });
            }
        }
        // Everything scanned: drop consumed bytes so the buffer only holds the partial value.
        let keep_from = self.start.unwrap_or(self.pos);
        self.buf.drain(..keep_from);
        self.pos -= keep_from;
        self.start = self.start.map(|s| s - keep_from);
        Ok(None)
    }

    fn finish(&mut self, start: usize) -> Result<Value> {
        self.start = None;
        let len = self.pos - start;
        if len > self.max {
            return Err(OvsdbError::FrameTooLarge { limit: self.max });
        }
        serde_json::from_slice(&self.buf[start..self.pos]).map_err(|e| OvsdbError::MalformedFrame {
            reason: format!("invalid json in a {len}-byte message: {e}"),
        })
    }
}

/// A JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request from the peer (ovsdb-server sends `echo`).
    Request {
        /// Method name.
        method: String,
        /// Params.
        params: Value,
        /// Id to echo in the response.
        id: Value,
    },
    /// A notification (`update2`, `locked`, ...): a request with a null id.
    Notification {
        /// Method name.
        method: String,
        /// Params.
        params: Value,
    },
    /// A response to one of our requests.
    Response {
        /// The id of our request.
        id: Value,
        /// The result (null on error).
        result: Value,
        /// The error (null on success).
        error: Value,
    },
}

impl Message {
    /// Classifies a received JSON value.
    pub fn from_value(mut value: Value) -> Result<Self> {
        let Some(object) = value.as_object_mut() else {
            return Err(OvsdbError::Protocol {
                reason: format!("message is not an object: {}", short(&value)),
            });
        };
        let id = object.remove("id").unwrap_or(Value::Null);
        if let Some(method) = object.remove("method") {
            let Value::String(method) = method else {
                return Err(OvsdbError::Protocol {
                    reason: format!("method is not a string: {}", short(&method)),
                });
            };
            let params = object.remove("params").unwrap_or(Value::Null);
            return Ok(if id.is_null() {
                Message::Notification { method, params }
            } else {
                Message::Request { method, params, id }
            });
        }
        if object.contains_key("result") || object.contains_key("error") {
            return Ok(Message::Response {
                id,
                result: object.remove("result").unwrap_or(Value::Null),
                error: object.remove("error").unwrap_or(Value::Null),
            });
        }
        Err(OvsdbError::Protocol {
            reason: format!("message is neither request nor response: {}", short(&value)),
        })
    }
}

/// Encodes a request.
pub fn encode_request(method: &str, params: &Value, id: u64) -> Vec<u8> {
    json!({"method": method, "params": params, "id": id})
        .to_string()
        .into_bytes()
}

/// Encodes a successful response.
pub fn encode_response(id: &Value, result: &Value) -> Vec<u8> {
    json!({"result": result, "error": null, "id": id})
        .to_string()
        .into_bytes()
}

/// Encodes an error response.
pub fn encode_error(id: &Value, error: &str) -> Vec<u8> {
    json!({"result": null, "error": error, "id": id})
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(framer: &mut Framer) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        while let Some(v) = framer.next_value()? {
            out.push(v);
        }
        Ok(out)
    }

    #[test]
    fn frames_split_anywhere() {
        let text = br#"{"id":1,"result":{"s":"a}\"]{"},"error":null} [1,[2]]
{"method":"echo","params":[],"id":"echo"}"#;
        for split in 0..text.len() {
            let mut f = Framer::new(1024);
            f.push(&text[..split]);
            let mut got = all(&mut f).unwrap();
            f.push(&text[split..]);
            got.extend(all(&mut f).unwrap());
            assert_eq!(got.len(), 3, "split at {split}");
            assert_eq!(got[0]["result"]["s"], "a}\"]{");
            assert_eq!(got[1], json!([1, [2]]));
            assert_eq!(got[2]["method"], "echo");
            assert_eq!(f.pending(), 0);
        }
    }

    #[test]
    fn byte_by_byte_with_utf8() {
        let text = "{\"k\":\"h\u{e9}llo \u{1f600} \\\\\"}".as_bytes();
        let mut f = Framer::new(1024);
        let mut got = Vec::new();
        for b in text {
            f.push(std::slice::from_ref(b));
            got.extend(all(&mut f).unwrap());
        }
        assert_eq!(got, vec![json!({"k": "h\u{e9}llo \u{1f600} \\"})]);
    }

    #[test]
    fn partial_value_is_pending() {
        let mut f = Framer::new(1024);
        f.push(b"  {\"id\":1,\"res");
        assert!(f.next_value().unwrap().is_none());
        assert_eq!(f.pending(), 12);
    }

    #[test]
    fn garbage_between_messages_is_malformed() {
        let mut f = Framer::new(1024);
        f.push(b"{} hello");
        assert_eq!(f.next_value().unwrap(), Some(json!({})));
        assert!(matches!(
            f.next_value(),
            Err(OvsdbError::MalformedFrame { .. })
        ));
    }

    #[test]
    fn invalid_json_inside_brackets_is_malformed() {
        let mut f = Framer::new(1024);
        f.push(b"{\"a\" 1]");
        let err = f.next_value().unwrap_err();
        assert!(matches!(err, OvsdbError::MalformedFrame { .. }), "{err}");
    }

    #[test]
    fn oversized_value_is_refused_while_streaming() {
        let mut f = Framer::new(64);
        f.push(b"[\"");
        assert!(f.next_value().unwrap().is_none());
        f.push(&[b'x'; 100]);
        assert!(matches!(
            f.next_value(),
            Err(OvsdbError::FrameTooLarge { limit: 64 })
        ));
        let mut g = Framer::new(4);
        g.push(b"[1,2,3]");
        assert!(matches!(
            g.next_value(),
            Err(OvsdbError::FrameTooLarge { limit: 4 })
        ));
    }

    #[test]
    fn classifies_messages() {
        assert_eq!(
            Message::from_value(json!({"method": "echo", "params": [], "id": "echo"})).unwrap(),
            Message::Request {
                method: "echo".into(),
                params: json!([]),
                id: json!("echo")
            }
        );
        assert!(matches!(
            Message::from_value(json!({"method": "update2", "params": [1], "id": null})).unwrap(),
            Message::Notification { .. }
        ));
        assert_eq!(
            Message::from_value(json!({"id": 3, "result": [], "error": null})).unwrap(),
            Message::Response {
                id: json!(3),
                result: json!([]),
                error: Value::Null
            }
        );
        assert!(Message::from_value(json!([1])).is_err());
        assert!(Message::from_value(json!({"id": 1})).is_err());
        assert!(Message::from_value(json!({"method": 5, "id": 1})).is_err());
    }

    #[test]
    fn encodes_jsonrpc_1_0() {
        let req: Value = serde_json::from_slice(&encode_request("echo", &json!([]), 7)).unwrap();
        assert_eq!(req, json!({"method": "echo", "params": [], "id": 7}));
        let resp: Value =
            serde_json::from_slice(&encode_response(&json!("echo"), &json!([]))).unwrap();
        assert_eq!(resp, json!({"result": [], "error": null, "id": "echo"}));
        let err: Value =
            serde_json::from_slice(&encode_error(&json!(1), "unknown method")).unwrap();
        assert_eq!(err["error"], "unknown method");
    }
}
