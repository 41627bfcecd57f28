//! Turning a provider's response body into what the model sees: JSON parsed when it is JSON,
//! text when it is text, base64 otherwise; capped at a configurable size with a `truncated`
//! flag; and scrubbed of any echo of the injected credential (see `scrub`).

use base64::{Engine, engine::general_purpose::STANDARD};
use futures::StreamExt;
use serde_json::Value;

use super::scrub::Scrubber;

/// A response body ready for a tool result.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedBody {
    pub body: Value,
    /// `json`, `text`, `base64`, `empty`, or `withheld` (body not returned; `body` says why).
    pub encoding: &'static str,
    pub content_type: Option<String>,
    pub truncated: bool,
    /// Bytes received (up to the cap when truncated).
    pub size_bytes: usize,
}

/// Read at most `cap` bytes of the body; the flag says whether more was left unread.
pub async fn read_capped(
    resp: reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = cap - out.len();
        if chunk.len() > room {
            out.extend_from_slice(&chunk[..room]);
            return Ok((out, true));
        }
        out.extend_from_slice(&chunk);
    }
    Ok((out, false))
}

fn is_json(ct: &str) -> bool {
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json") || essence == "text/json"
}

fn is_text(ct: &str) -> bool {
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || matches!(
            essence.as_str(),
            "application/xml"
                | "application/javascript"
                | "application/x-www-form-urlencoded"
                | "application/graphql"
                | "application/x-ndjson"
        )
        || essence.ends_with("+xml")
}

/// A body the vault will not pass on, with the reason in its place.
pub fn withheld(reason: &str, content_type: Option<&str>) -> RenderedBody {
    RenderedBody {
        body: Value::String(reason.to_owned()),
        encoding: "withheld",
        content_type: content_type.map(str::to_owned),
        truncated: false,
        size_bytes: 0,
    }
}

/// The declared (or BOM-signalled) UTF-16 byte order of a body, if it is UTF-16 text.
fn utf16_order(bytes: &[u8], ct: Option<&str>) -> Option<bool> {
    let charset = ct
        .and_then(|c| {
            c.split(';')
                .skip(1)
                .find_map(|p| p.trim().strip_prefix("charset="))
        })
        .map(|c| c.trim_matches('"').to_ascii_lowercase());
    match (charset.as_deref(), bytes) {
        (_, [0xFF, 0xFE, ..]) => Some(true),
        (_, [0xFE, 0xFF, ..]) => Some(false),
        (Some("utf-16le"), _) => Some(true),
        (Some("utf-16be" | "utf-16"), _) => Some(false),
        _ => None,
    }
}

/// Decode UTF-16 text (lossy), without its byte-order mark.
fn decode_utf16(bytes: &[u8], little_endian: bool) -> Vec<u8> {
    let units = bytes.chunks_exact(2).map(|c| {
        if little_endian {
            u16::from_le_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], c[1]])
        }
    });
    let text: String = char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    text.trim_start_matches('\u{feff}').as_bytes().to_vec()
}

/// Render a (possibly truncated) body, with every form of the call's secrets removed.
pub fn render(
    bytes: Vec<u8>,
    truncated: bool,
    content_type: Option<&str>,
    scrub: &Scrubber,
) -> RenderedBody {
    let size_bytes = bytes.len();
    let ct = content_type.map(str::to_owned);
    // UTF-16 text is turned into UTF-8 first, so it is scrubbed (and shown) as the text it is.
    let bytes = match utf16_order(&bytes, content_type) {
        Some(le) => decode_utf16(&bytes, le),
        None => bytes,
    };
    if bytes.is_empty() {
        return RenderedBody {
            body: Value::Null,
            encoding: "empty",
            content_type: ct,
            truncated,
            size_bytes,
        };
    }
    let declared_json = ct.as_deref().is_some_and(is_json);
    let declared_text = ct.as_deref().is_some_and(is_text);
    // Cut a truncated body at a character boundary so it stays valid text.
    let text = match std::str::from_utf8(&bytes) {
        Ok(s) => Some(s),
        Err(e) if truncated && e.valid_up_to() + 4 >= bytes.len() => {
            Some(std::str::from_utf8(&bytes[..e.valid_up_to()]).expect("valid prefix"))
        }
        Err(_) => None,
    };
    match text {
        Some(t) if declared_json || declared_text || ct.is_none() => {
            if !truncated
                && (declared_json || ct.is_none())
                && let Ok(mut v) = serde_json::from_str::<Value>(t)
            {
                // Parsing decodes JSON escapes, so every string is scrubbed in its real form.
                scrub.json(&mut v);
                return RenderedBody {
                    body: v,
                    encoding: "json",
                    content_type: ct,
                    truncated,
                    size_bytes,
                };
            }
            let t = if truncated {
                scrub.text_truncated(t)
            } else {
                scrub.text(t).into_owned()
            };
            RenderedBody {
                body: Value::String(t),
                encoding: "text",
                content_type: ct,
                truncated,
                size_bytes,
            }
        }
        _ => RenderedBody {
            body: Value::String(STANDARD.encode(scrub.bytes(&bytes))),
            encoding: "base64",
            content_type: ct,
            truncated,
            size_bytes,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_parsed_and_scrubbed() {
        let r = render(
            br#"{"echo":"Bearer tok-abc-123","n":1}"#.to_vec(),
            false,
            Some("application/json; charset=utf-8"),
            &Scrubber::new(["tok-abc-123"]),
        );
        assert_eq!(r.encoding, "json");
        assert_eq!(r.body["n"], 1);
        assert_eq!(r.body["echo"], "Bearer [REDACTED]");
    }

    #[test]
    fn vendor_json_and_untyped_json() {
        assert_eq!(
            render(
                b"[1]".to_vec(),
                false,
                Some("application/vnd.github+json"),
                &Scrubber::default()
            )
            .encoding,
            "json"
        );
        assert_eq!(
            render(b"[1]".to_vec(), false, None, &Scrubber::default()).encoding,
            "json"
        );
        assert_eq!(
            render(b"hello".to_vec(), false, None, &Scrubber::default()).encoding,
            "text"
        );
    }

    #[test]
    fn truncated_json_becomes_text_with_flag() {
        let r = render(
            br#"{"a": [1, 2"#.to_vec(),
            true,
            Some("application/json"),
            &Scrubber::default(),
        );
        assert_eq!(r.encoding, "text");
        assert!(r.truncated);
    }

    #[test]
    fn truncation_mid_character_keeps_valid_text() {
        let mut b = "héllo".as_bytes().to_vec();
        b.truncate(2); // cuts é in half
        let r = render(b, true, Some("text/plain"), &Scrubber::default());
        assert_eq!(r.body, Value::String("h".into()));
    }

    #[test]
    fn binary_is_base64_with_type_and_scrubbed() {
        let mut data = vec![0u8, 159, 146, 150];
        data.extend_from_slice(b"tok-abc-123");
        let r = render(
            data,
            false,
            Some("image/png"),
            &Scrubber::new(["tok-abc-123"]),
        );
        assert_eq!(r.encoding, "base64");
        assert_eq!(r.content_type.as_deref(), Some("image/png"));
        let back = STANDARD.decode(r.body.as_str().unwrap()).unwrap();
        assert!(!back.windows(11).any(|w| w == b"tok-abc-123"));
    }

    #[test]
    fn empty_body() {
        assert_eq!(
            render(
                vec![],
                false,
                Some("application/json"),
                &Scrubber::default()
            )
            .encoding,
            "empty"
        );
    }
}

#[cfg(test)]
mod utf16_tests {
    use super::*;

    #[test]
    fn utf16_text_is_decoded_then_scrubbed() {
        let secret = "tok-utf16-secret";
        let text = format!("echo {secret}");
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let r = render(le, false, Some("text/plain"), &Scrubber::new([secret]));
        assert_eq!(r.body, Value::String("echo [REDACTED]".into()));
        let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        let r = render(
            be,
            false,
            Some("text/plain; charset=UTF-16BE"),
            &Scrubber::new([secret]),
        );
        assert_eq!(r.body, Value::String("echo [REDACTED]".into()));
    }
}
