//! JSON-RPC framing in front of rmcp on stdio. rmcp drops a line that is not JSON without a
//! word and answers a malformed message without its `id`; JSON-RPC 2.0 wants `-32700 Parse
//! error` (id null) for the first and `-32600 Invalid Request` (with the id when there is one)
//! for the second. This filter reads stdin line by line, answers bad lines itself, and passes
//! good ones on. All output — rmcp's and ours — goes through one writer, a whole line at a time,
//! so the two can never interleave on stdout.

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    sync::mpsc,
};

/// Longest accepted line (one JSON-RPC message).
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// Why a line is not passed on, as a JSON-RPC error reply.
fn error_reply(id: Value, code: i64, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

fn valid_id(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Null)
}

/// `None` when the line may go to rmcp, else the error reply to send instead.
pub fn check_line(line: &[u8]) -> Option<String> {
    let Ok(text) = std::str::from_utf8(line) else {
        return Some(error_reply(
            Value::Null,
            -32700,
            "Parse error: the line is not UTF-8",
        ));
    };
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Some(error_reply(
                Value::Null,
                -32700,
                &format!("Parse error: {e}"),
            ));
        }
    };
    let invalid =
        |id: Value, why: &str| Some(error_reply(id, -32600, &format!("Invalid Request: {why}")));
    match &v {
        Value::Object(m) => {
            let id = m
                .get("id")
                .filter(|i| valid_id(i))
                .cloned()
                .unwrap_or(Value::Null);
            if m.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
                return invalid(id, "\"jsonrpc\" must be \"2.0\"");
            }
            if m.get("id").is_some_and(|i| !valid_id(i)) {
                return invalid(Value::Null, "\"id\" must be a string, a number or null");
            }
            match m.get("method") {
                Some(Value::String(_)) => {
                    if m.get("params")
                        .is_some_and(|p| !(p.is_object() || p.is_array()))
                    {
                        return invalid(id, "\"params\" must be an object or an array");
                    }
                    None
                }
                Some(_) => invalid(id, "\"method\" must be a string"),
                // A response to one of our requests (elicitation): needs an id and one outcome.
                None if m.contains_key("id")
                    && (m.contains_key("result") ^ m.contains_key("error")) =>
                {
                    None
                }
                None => invalid(
                    id,
                    "a message needs a \"method\" (request or notification) or an \"id\" with \"result\" or \"error\"",
                ),
            }
        }
        Value::Array(a) if a.is_empty() => invalid(Value::Null, "an empty batch"),
        Value::Array(_) => None,
        _ => invalid(Value::Null, "a message is a JSON object"),
    }
}

/// Read one line (without its `\n`) into `buf`. Returns `None` at end of input, else whether
/// the line was longer than `max` (its content is then dropped).
async fn next_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(any.then_some(too_long));
        }
        any = true;
        let (chunk, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (&avail[..i], Some(i + 1)),
            None => (avail, None),
        };
        if !too_long && buf.len() + chunk.len() <= max {
            buf.extend_from_slice(chunk);
        } else {
            too_long = true;
            buf.clear();
        }
        let used = done.unwrap_or(chunk.len());
        r.consume(used);
        if done.is_some() {
            return Ok(Some(too_long));
        }
    }
}

/// Wire `input`/`output` (stdin/stdout) to the pair handed to rmcp. The returned reader yields
/// only well-formed lines; whatever rmcp writes to the returned writer reaches `output` a whole
/// line at a time, as do the error replies.
pub fn framed<I, O>(input: I, output: O) -> (tokio::io::DuplexStream, tokio::io::DuplexStream)
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin + Send + 'static,
{
    let (mut to_rmcp, rmcp_in) = tokio::io::duplex(256 * 1024);
    let (rmcp_out, from_rmcp) = tokio::io::duplex(256 * 1024);
    let (lines_tx, mut lines_rx) = mpsc::channel::<Vec<u8>>(256);

    // stdin → checks → rmcp (or an error reply).
    let replies = lines_tx.clone();
    tokio::spawn(async move {
        let mut r = BufReader::new(input);
        let mut buf = Vec::new();
        loop {
            match next_line(&mut r, &mut buf, MAX_LINE).await {
                Ok(None) | Err(_) => break,
                Ok(Some(true)) => {
                    let e = error_reply(
                        Value::Null,
                        -32700,
                        "Parse error: the message is longer than 16 MiB",
                    );
                    if replies.send(e.into_bytes()).await.is_err() {
                        break;
                    }
                }
                Ok(Some(false)) => {
                    let line = buf.strip_suffix(b"\r").unwrap_or(&buf);
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match check_line(line) {
                        Some(e) => {
                            if replies.send(e.into_bytes()).await.is_err() {
                                break;
                            }
                        }
                        None => {
                            let mut msg = line.to_vec();
                            msg.push(b'\n');
                            if to_rmcp.write_all(&msg).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        }
        // End of input reaches rmcp as end of its input: it shuts down as before.
        let _ = to_rmcp.shutdown().await;
    });

    // rmcp → whole lines → the writer.
    tokio::spawn(async move {
        let mut r = BufReader::new(from_rmcp);
        let mut buf = Vec::new();
        while let Ok(Some(_)) = next_line(&mut r, &mut buf, usize::MAX).await {
            if lines_tx.send(std::mem::take(&mut buf)).await.is_err() {
                break;
            }
        }
    });

    // The one writer of stdout.
    tokio::spawn(async move {
        let mut out = output;
        while let Some(mut line) = lines_rx.recv().await {
            line.push(b'\n');
            if out.write_all(&line).await.is_err() || out.flush().await.is_err() {
                break;
            }
        }
    });
    (rmcp_in, rmcp_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(line: &str) -> Option<Value> {
        check_line(line.as_bytes()).map(|s| serde_json::from_str(&s).unwrap())
    }

    #[test]
    fn good_messages_pass() {
        for ok in [
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":7,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":7,"error":{"code":1,"message":"m"}}"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
        ] {
            assert_eq!(reply(ok), None, "{ok}");
        }
    }

    #[test]
    fn bad_lines_get_json_rpc_errors() {
        let cases: &[(&str, i64, Value)] = &[
            ("garbage", -32700, Value::Null),
            ("{\"jsonrpc\":\"2.0\",", -32700, Value::Null),
            ("42", -32600, Value::Null),
            ("[]", -32600, Value::Null),
            (r#"{"jsonrpc":"2.0","id":2}"#, -32600, json!(2)),
            (
                r#"{"jsonrpc":"1.0","id":"x","method":"ping"}"#,
                -32600,
                json!("x"),
            ),
            (r#"{"jsonrpc":"2.0","id":3,"method":5}"#, -32600, json!(3)),
            (
                r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
                -32600,
                Value::Null,
            ),
            (
                r#"{"jsonrpc":"2.0","id":4,"method":"x","params":"s"}"#,
                -32600,
                json!(4),
            ),
            (
                r#"{"jsonrpc":"2.0","id":5,"result":1,"error":{}}"#,
                -32600,
                json!(5),
            ),
        ];
        for (line, code, id) in cases {
            let r = reply(line).unwrap_or_else(|| panic!("{line} passed"));
            assert_eq!(r["error"]["code"], *code, "{line}");
            assert_eq!(&r["id"], id, "{line}");
            assert_eq!(r["jsonrpc"], "2.0");
        }
        assert_eq!(
            check_line(&[0xff, 0xfe]).map(|s| s.contains("-32700")),
            Some(true)
        );
    }

    #[tokio::test]
    async fn lines_over_the_limit_are_dropped_whole() {
        let data = format!("{}\nsecond\n", "x".repeat(100));
        let mut r = BufReader::with_capacity(8, data.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(next_line(&mut r, &mut buf, 50).await.unwrap(), Some(true));
        assert_eq!(next_line(&mut r, &mut buf, 50).await.unwrap(), Some(false));
        assert_eq!(buf, b"second");
        assert_eq!(next_line(&mut r, &mut buf, 50).await.unwrap(), None);
    }

    #[tokio::test]
    async fn filter_passes_good_lines_and_answers_bad_ones() {
        use tokio::io::AsyncReadExt;
        let (mut client, server_in) = tokio::io::duplex(4096);
        let (server_out, mut client_out) = tokio::io::duplex(4096);
        let (mut rmcp_in, mut rmcp_out) = framed(server_in, server_out);
        client
            .write_all(b"nope\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let mut got = String::new();
        rmcp_in.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n");
        rmcp_out.write_all(b"{\"a\":").await.unwrap();
        rmcp_out.write_all(b"1}\n").await.unwrap();
        drop(rmcp_out);
        let mut out = String::new();
        client_out.read_to_string(&mut out).await.unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines.contains(&"{\"a\":1}"), "{out}");
        assert!(lines.iter().any(|l| l.contains("-32700")), "{out}");
    }
}
