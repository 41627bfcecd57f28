//! Removing every form of a secret from text that came back from a provider (bodies, headers,
//! error descriptions) before the model, a log line or the audit trail sees it.
//!
//! Providers echo credentials in many shapes: verbatim, in another letter case, JSON-escaped
//! (`\u0074ok…`, `\/`), percent-encoded (once or twice), as HTML entities, as hex, or inside
//! base64 (of the token alone or of a whole `Bearer …` / `user:pass` value, so at any byte
//! alignment). The scrubber therefore matches in two ways:
//! - **encoded forms** of each secret (raw, lower-case hex, standard and URL-safe base64 at all
//!   three alignments) are searched case-insensitively in the text as it is;
//! - the text is **decoded** layer by layer (percent, JSON/JS escapes, HTML entities, line
//!   breaks dropped), keeping a map from every decoded byte back to the text it came from, and
//!   the same forms are searched in each decoded layer. A match there redacts the original
//!   (still encoded) span;
//! - **blobs** — runs of base64 or hex in the text or a decoded layer — are decoded and
//!   searched the same way (so base64 of base64 of a token is found); a blob that holds a
//!   secret is redacted whole. UTF-16 forms of each secret are searched too.
//!
//! A body cut at the size cap may end in the middle of a secret: [`Scrubber::text_truncated`]
//! also removes a tail that is the beginning of any form of a secret.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::{
    Engine, alphabet,
    engine::{
        DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig,
        general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD},
    },
};

/// Lenient decoders for blobs: no padding required, trailing bits ignored.
const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const B64_STD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const B64_URL: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

pub use crate::secret::REDACTED;

/// Secrets shorter than this are not credentials and would shred ordinary text.
const MIN_SECRET: usize = 4;
/// Encoded forms shorter than this match ordinary text too easily (short secrets only).
const MIN_FORM: usize = 8;
/// A tail at the cut of a truncated body shorter than this is not treated as a partial secret.
const MIN_PARTIAL: usize = 4;
/// Decoding layers tried (double percent-encoding, entities inside JSON escapes, …).
const MAX_LAYERS: usize = 8;
/// How deep blobs inside blobs are opened (base64 of base64 of a token is depth 2).
const MAX_BLOB_DEPTH: usize = 3;
/// Shortest base64/hex run worth decoding.
const MIN_BLOB: usize = 12;

/// The compiled forms of the secrets one operation put on the wire.
#[derive(Clone, Default)]
pub struct Scrubber {
    matcher: Option<AhoCorasick>,
    /// Lower-case forms, for recognizing a secret cut in half at a truncation boundary.
    /// Shared: a scrubber is compiled once per credential and cloned freely.
    forms: std::sync::Arc<[Vec<u8>]>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scrubber({} forms)", self.forms.len())
    }
}

/// Every form of one secret that is searched for (lower case; matching ignores ASCII case).
fn forms_of(secret: &[u8], out: &mut Vec<Vec<u8>>) {
    let mut push = |f: Vec<u8>, min: usize| {
        let f = f.to_ascii_lowercase();
        if f.len() >= min && !out.contains(&f) {
            out.push(f);
        }
    };
    push(secret.to_vec(), MIN_SECRET);
    push(hex::encode(secret).into_bytes(), MIN_FORM);
    // UTF-16 (a `charset=utf-16` body, or binary data) in both byte orders.
    if let Ok(text) = std::str::from_utf8(secret) {
        push(
            text.encode_utf16().flat_map(u16::to_le_bytes).collect(),
            MIN_FORM,
        );
        push(
            text.encode_utf16().flat_map(u16::to_be_bytes).collect(),
            MIN_FORM,
        );
    }
    // Base64 of data containing the secret at byte offset ≡ k (mod 3): the characters that
    // depend on the secret's bytes alone are those of the whole 3-byte groups inside it.
    for skip in 0..3 {
        let Some(rest) = secret.get(skip..) else {
            continue;
        };
        let whole = rest.len() / 3 * 3;
        if whole == 0 {
            continue;
        }
        push(
            STANDARD_NO_PAD.encode(&rest[..whole]).into_bytes(),
            MIN_FORM,
        );
        push(
            URL_SAFE_NO_PAD.encode(&rest[..whole]).into_bytes(),
            MIN_FORM,
        );
    }
}

/// One decoded layer: the decoded bytes and, for each, the span of the text it came from.
struct Layer {
    bytes: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

fn hex_val(b: u8) -> Option<u32> {
    (b as char).to_digit(16)
}

fn hex_at(s: &[u8], at: usize, n: usize) -> Option<u32> {
    let digits = s.get(at..at + n)?;
    digits
        .iter()
        .try_fold(0u32, |acc, &d| Some(acc * 16 + hex_val(d)?))
}

/// Decode `\uXXXX` (with surrogate pairs) at `i`; returns the char and the bytes consumed.
fn json_unicode(s: &[u8], i: usize) -> Option<(char, usize)> {
    let hi = hex_at(s, i + 2, 4)?;
    if (0xD800..0xDC00).contains(&hi) {
        if s.get(i + 6) == Some(&b'\\') && s.get(i + 7) == Some(&b'u') {
            let lo = hex_at(s, i + 8, 4)?;
            if (0xDC00..0xE000).contains(&lo) {
                let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                return char::from_u32(c).map(|c| (c, 12));
            }
        }
        return None;
    }
    char::from_u32(hi).map(|c| (c, 6))
}

/// Decode an HTML character reference at `i` (`&#116;`, `&#x74;`, `&amp;` …).
fn html_entity(s: &[u8], i: usize) -> Option<(char, usize)> {
    let end = i
        + 1
        + s.get(i + 1..(i + 12).min(s.len()))?
            .iter()
            .position(|&b| b == b';')?;
    let body = std::str::from_utf8(&s[i + 1..end]).ok()?;
    let c = if let Some(num) = body.strip_prefix('#') {
        let v = match num.strip_prefix(['x', 'X']) {
            Some(h) => u32::from_str_radix(h, 16).ok()?,
            None => num.parse().ok()?,
        };
        char::from_u32(v)?
    } else {
        match body {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            "sol" => '/',
            "plus" => '+',
            "equals" => '=',
            "colon" => ':',
            "lowbar" => '_',
            "hyphen" | "dash" => '-',
            "period" => '.',
            "num" => '#',
            _ => return None,
        }
    };
    Some((c, end + 1 - i))
}

/// Characters that start an encoding the decoder understands (or line breaks it drops).
fn has_encoding(s: &[u8]) -> bool {
    s.iter()
        .any(|b| matches!(b, b'%' | b'\\' | b'&' | b'\r' | b'\n'))
}

/// Decode one layer of percent-encoding, JSON/JS escapes and HTML entities, dropping line
/// breaks (base64 is often wrapped). Returns `None` when nothing changes.
fn decode(s: &[u8]) -> Option<Layer> {
    if !has_encoding(s) {
        return None;
    }
    let mut bytes = Vec::with_capacity(s.len());
    let mut spans = Vec::with_capacity(s.len());
    let mut changed = false;
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        let decoded: Option<(char, usize)> = match b {
            b'%' => hex_at(s, i + 1, 2).map(|v| (char::from(v as u8), 3)),
            b'\\' => match s.get(i + 1) {
                Some(b'u') => json_unicode(s, i),
                Some(b'x') => hex_at(s, i + 2, 2).map(|v| (char::from(v as u8), 4)),
                Some(&c @ (b'/' | b'\\' | b'"' | b'\'')) => Some((c as char, 2)),
                _ => None,
            },
            b'&' => html_entity(s, i),
            b'\r' | b'\n' => {
                changed = true;
                i += 1;
                continue;
            }
            _ => None,
        };
        match decoded {
            Some((c, len)) => {
                changed = true;
                if c.is_ascii() {
                    // `%XX` may encode one byte of a multi-byte character: keep the byte.
                    bytes.push(c as u8);
                    spans.push((i, i + len));
                } else if b == b'%' {
                    bytes.push(hex_at(s, i + 1, 2).expect("decoded above") as u8);
                    spans.push((i, i + len));
                } else {
                    let mut buf = [0u8; 4];
                    for &x in c.encode_utf8(&mut buf).as_bytes() {
                        bytes.push(x);
                        spans.push((i, i + len));
                    }
                }
                i += len;
            }
            None => {
                bytes.push(b);
                spans.push((i, i + 1));
                i += 1;
            }
        }
    }
    changed.then_some(Layer { bytes, spans })
}

/// Merge overlapping or touching spans.
fn merge(mut spans: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    spans.sort_unstable();
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Replace `spans` of `s` with the placeholder. Spans are widened to character boundaries.
fn redact_spans(s: &str, spans: Vec<(usize, usize)>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for (mut a, mut b) in merge(spans) {
        while a > 0 && !s.is_char_boundary(a) {
            a -= 1;
        }
        while b < s.len() && !s.is_char_boundary(b) {
            b += 1;
        }
        if a < at {
            a = at;
        }
        out.push_str(&s[at..a]);
        out.push_str(REDACTED);
        at = b.max(at);
    }
    out.push_str(&s[at..]);
    out
}

/// Does `hay` end with the first `n` bytes of `form` (ignoring ASCII case)?
fn ends_with_prefix(hay: &[u8], form: &[u8], n: usize) -> bool {
    n <= hay.len() && hay[hay.len() - n..].eq_ignore_ascii_case(&form[..n])
}

/// Length of the longest tail of `hay` that is a proper beginning of some form (0 if none).
fn partial_tail(hay: &[u8], forms: &[Vec<u8>]) -> usize {
    let mut best = 0;
    for f in forms {
        let max = (f.len() - 1).min(hay.len());
        for n in (MIN_PARTIAL.max(best + 1)..=max).rev() {
            if ends_with_prefix(hay, f, n) {
                best = n;
                break;
            }
        }
    }
    best
}

/// An escape sequence cut off by truncation (`%6`, `\u00`, `&#11`): undecodable garbage that
/// could hide the first characters of a secret.
fn dangling_escape(s: &[u8]) -> usize {
    let tail = &s[s.len().saturating_sub(12)..];
    for (i, &b) in tail.iter().enumerate() {
        let rest = &tail[i + 1..];
        let dangling = match b {
            b'%' => rest.len() < 2 && rest.iter().all(|c| c.is_ascii_hexdigit()),
            b'\\' => {
                rest.is_empty()
                    || (rest[0] == b'u'
                        && rest.len() < 5
                        && rest[1..].iter().all(u8::is_ascii_hexdigit))
                    || (rest[0] == b'x'
                        && rest.len() < 3
                        && rest[1..].iter().all(u8::is_ascii_hexdigit))
            }
            b'&' => rest.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'#'),
            _ => false,
        };
        if dangling {
            return tail.len() - i;
        }
    }
    0
}

impl Scrubber {
    /// A scrubber for these secrets (access token, refresh token, client secret, the exact
    /// header value sent, …). Secrets shorter than 4 bytes are ignored.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut forms = Vec::new();
        for s in secrets {
            if s.len() >= MIN_SECRET {
                forms_of(s.as_bytes(), &mut forms);
            }
        }
        if forms.is_empty() {
            return Scrubber::default();
        }
        let matcher = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .build(&forms)
            .expect("literal patterns always compile");
        Scrubber {
            matcher: Some(matcher),
            forms: forms.into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// Spans of `s` that hold a secret, in any form, at any decoding layer.
    fn find(&self, s: &[u8]) -> Vec<(usize, usize)> {
        self.find_depth(s, MAX_BLOB_DEPTH)
    }

    fn find_depth(&self, s: &[u8], depth: usize) -> Vec<(usize, usize)> {
        let Some(m) = &self.matcher else {
            return Vec::new();
        };
        let mut spans: Vec<(usize, usize)> = m.find_iter(s).map(|x| (x.start(), x.end())).collect();
        if depth > 0 {
            spans.extend(self.blob_spans(s, depth));
        }
        // Each layer maps its bytes to spans of the original text.
        let mut layer: Option<Layer> = None;
        for _ in 0..MAX_LAYERS {
            let next = match &layer {
                None => decode(s),
                Some(prev) => decode(&prev.bytes).map(|l| Layer {
                    spans: l
                        .spans
                        .iter()
                        .map(|&(a, b)| (prev.spans[a].0, prev.spans[b - 1].1))
                        .collect(),
                    bytes: l.bytes,
                }),
            };
            let Some(l) = next else { break };
            spans.extend(
                m.find_iter(&l.bytes)
                    .map(|x| (l.spans[x.start()].0, l.spans[x.end() - 1].1)),
            );
            if depth > 0 {
                spans.extend(
                    self.blob_spans(&l.bytes, depth)
                        .into_iter()
                        .map(|(a, b)| (l.spans[a].0, l.spans[b - 1].1)),
                );
            }
            layer = Some(l);
        }
        spans
    }

    /// Runs of base64 or hex in `s` that decode to something holding a secret.
    fn blob_spans(&self, s: &[u8], depth: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let is_b64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_');
        let mut i = 0;
        while i < s.len() {
            if !is_b64(s[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < s.len() && is_b64(s[i]) {
                i += 1;
            }
            let mut end = i;
            while end < s.len() && end - i < 2 && s[end] == b'=' {
                end += 1;
            }
            if i - start >= MIN_BLOB && self.blob_holds_secret(&s[start..i], depth) {
                out.push((start, end));
            }
            i = end.max(i);
        }
        out
    }

    fn blob_holds_secret(&self, run: &[u8], depth: usize) -> bool {
        let holds = |decoded: &[u8]| !self.find_depth(decoded, depth - 1).is_empty();
        if run.len().is_multiple_of(2)
            && run.iter().all(u8::is_ascii_hexdigit)
            && let Ok(d) = hex::decode(run)
            && holds(&d)
        {
            return true;
        }
        // The secret may sit anywhere in the run: try the run and its three shifted tails, in
        // both base64 alphabets.
        let url_safe = run.iter().any(|b| matches!(b, b'-' | b'_'));
        (0..4).any(|skip| {
            let part = &run[skip.min(run.len())..];
            // A final group of one character cannot be base64.
            let part = &part[..part.len() - usize::from(part.len() % 4 == 1)];
            let decoded = if url_safe {
                B64_URL.decode(part)
            } else {
                B64_STD.decode(part)
            };
            decoded.is_ok_and(|d| holds(&d))
        })
    }

    /// True when `s` holds any form of a secret.
    pub fn contains(&self, s: &str) -> bool {
        !self.find(s.as_bytes()).is_empty()
    }

    /// `s` with every form of every secret replaced by `[REDACTED]`.
    pub fn text<'s>(&self, s: &'s str) -> Cow<'s, str> {
        let spans = self.find(s.as_bytes());
        if spans.is_empty() {
            Cow::Borrowed(s)
        } else {
            Cow::Owned(redact_spans(s, spans))
        }
    }

    /// Like [`Scrubber::text`] for text that was cut at a size limit: a tail that begins a
    /// secret in any form (raw or decoded) is removed too, so no partial credential survives.
    pub fn text_truncated(&self, s: &str) -> String {
        let mut out = self.text(s).into_owned();
        if self.is_empty() {
            return out;
        }
        let cut = dangling_escape(out.as_bytes());
        let mut keep = out.len() - cut;
        // The raw text, then each decoded layer of what is kept.
        let raw_tail = partial_tail(&out.as_bytes()[..keep], &self.forms);
        if raw_tail > 0 {
            keep -= raw_tail;
        }
        let mut layer: Option<Layer> = None;
        for _ in 0..MAX_LAYERS {
            let base = &out.as_bytes()[..keep];
            let next = match &layer {
                None => decode(base),
                Some(prev) => decode(&prev.bytes).map(|l| Layer {
                    spans: l
                        .spans
                        .iter()
                        .map(|&(a, b)| (prev.spans[a].0, prev.spans[b - 1].1))
                        .collect(),
                    bytes: l.bytes,
                }),
            };
            let Some(l) = next else { break };
            let n = partial_tail(&l.bytes, &self.forms);
            if n > 0 {
                keep = keep.min(l.spans[l.bytes.len() - n].0);
            }
            layer = Some(l);
        }
        if keep < out.len() {
            while !out.is_char_boundary(keep) {
                keep -= 1;
            }
            out.truncate(keep);
            out.push_str(REDACTED);
        }
        out
    }

    /// Bytes (a binary body) with raw and encoded forms replaced.
    pub fn bytes<'b>(&self, b: &'b [u8]) -> Cow<'b, [u8]> {
        let Some(m) = &self.matcher else {
            return Cow::Borrowed(b);
        };
        let spans = merge(m.find_iter(b).map(|x| (x.start(), x.end())).collect());
        if spans.is_empty() {
            return Cow::Borrowed(b);
        }
        let mut out = Vec::with_capacity(b.len());
        let mut at = 0;
        for (a, e) in spans {
            out.extend_from_slice(&b[at..a]);
            out.extend_from_slice(REDACTED.as_bytes());
            at = e;
        }
        out.extend_from_slice(&b[at..]);
        Cow::Owned(out)
    }

    /// Scrub every string (and object key) of a JSON value in place.
    pub fn json(&self, v: &mut serde_json::Value) {
        use serde_json::Value;
        if self.is_empty() {
            return;
        }
        match v {
            Value::String(s) => {
                if let Cow::Owned(t) = self.text(s) {
                    *s = t;
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.json(x)),
            Value::Object(m) => {
                if m.keys().any(|k| self.contains(k)) {
                    let old = std::mem::take(m);
                    for (k, x) in old {
                        m.insert(self.text(&k).into_owned(), x);
                    }
                }
                m.values_mut().for_each(|x| self.json(x));
            }
            _ => {}
        }
    }

    /// Scrub an optional message.
    pub fn opt(&self, s: Option<String>) -> Option<String> {
        s.map(|s| match self.text(&s) {
            Cow::Borrowed(_) => s,
            Cow::Owned(t) => t,
        })
    }

    /// Scrub an owned string.
    pub fn owned(&self, s: String) -> String {
        match self.text(&s) {
            Cow::Borrowed(_) => s,
            Cow::Owned(t) => t,
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    use super::*;

    const TOK: &str = "cnry-Tok3n/Ab+Cd=Ef_9x";

    fn s() -> Scrubber {
        Scrubber::new([TOK])
    }

    fn clean(out: &str) {
        let lower = out.to_ascii_lowercase();
        assert!(!lower.contains(&TOK.to_ascii_lowercase()), "{out}");
        assert!(!lower.contains("tok3n/ab"), "{out}");
    }

    fn pct_all(t: &str, upper: bool) -> String {
        t.bytes()
            .map(|b| {
                if upper {
                    format!("%{b:02X}")
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect()
    }

    #[test]
    fn every_plausible_encoding_is_removed() {
        let sc = s();
        let u_all: String = TOK
            .chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect();
        let u_some: String = TOK
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 3 == 0 {
                    format!("\\u{:04X}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect();
        let cases = vec![
            ("raw", format!("echo {TOK} end")),
            ("upper", format!("echo {} end", TOK.to_uppercase())),
            ("lower", TOK.to_lowercase()),
            ("json \\u all", format!("{{\"t\":\"{u_all}\"}}")),
            ("json \\u some", format!("{{\"t\":\"{u_some}\"}}")),
            ("json \\/", TOK.replace('/', "\\/")),
            ("b64", STANDARD.encode(TOK)),
            ("b64url", URL_SAFE.encode(TOK)),
            ("b64 bearer", STANDARD.encode(format!("Bearer {TOK}"))),
            ("b64 offset1", STANDARD.encode(format!("x{TOK}"))),
            ("b64 offset2", URL_SAFE_NO_PAD.encode(format!("xy{TOK}"))),
            ("b64 wrapped", {
                let e = STANDARD.encode(format!("user:{TOK}"));
                format!("{}\r\n{}", &e[..10], &e[10..])
            }),
            ("hex", hex::encode(TOK)),
            ("HEX", hex::encode_upper(TOK)),
            ("pct", pct_all(TOK, true)),
            ("pct lower", pct_all(TOK, false)),
            ("pct double", pct_all(&pct_all(TOK, true), true)),
            (
                "form",
                url::form_urlencoded::byte_serialize(TOK.as_bytes()).collect(),
            ),
            (
                "html dec",
                TOK.chars().map(|c| format!("&#{};", c as u32)).collect(),
            ),
            (
                "html hex",
                TOK.chars().map(|c| format!("&#x{:x};", c as u32)).collect(),
            ),
            ("b64 in pct", {
                let e = STANDARD.encode(TOK);
                url::form_urlencoded::byte_serialize(e.as_bytes()).collect()
            }),
            ("b64 of b64", STANDARD.encode(STANDARD.encode(TOK))),
            (
                "b64 of b64 of a header",
                format!(
                    "x={}",
                    URL_SAFE.encode(STANDARD.encode(format!("Bearer {TOK}")))
                ),
            ),
            (
                "hex of b64",
                hex::encode(STANDARD.encode(format!("k {TOK}"))),
            ),
            (
                "utf-16le",
                TOK.encode_utf16()
                    .flat_map(u16::to_le_bytes)
                    .map(char::from)
                    .collect(),
            ),
            (
                "utf-16be",
                TOK.encode_utf16()
                    .flat_map(u16::to_be_bytes)
                    .map(char::from)
                    .collect(),
            ),
            ("four layers", {
                let html: String = TOK.chars().map(|c| format!("&#{};", c as u32)).collect();
                let json = html.replace('&', "\\u0026");
                pct_all(&pct_all(&json, true), false)
            }),
        ];
        for (name, text) in cases {
            let out = sc.text(&text);
            assert!(out.contains(REDACTED), "{name}: {out}");
            clean(&out);
            // decoded forms must not survive either
            if let Some(l) = decode(out.as_bytes()) {
                clean(&String::from_utf8_lossy(&l.bytes));
            }
            assert!(!sc.contains(&out), "{name}: still found in {out}");
        }
    }

    #[test]
    fn ordinary_text_is_untouched() {
        let sc = s();
        for t in [
            "{\"login\":\"octocat\",\"id\":1}",
            "100% of %41 things & more \\n",
            "&amp; &#x26; \\u0041",
            "",
        ] {
            assert_eq!(sc.text(t), t);
        }
    }

    #[test]
    fn text_around_a_match_is_kept() {
        let text = format!("a {} b", pct_all(TOK, true));
        assert_eq!(s().text(&text), format!("a {REDACTED} b"));
    }

    #[test]
    fn tiny_secrets_are_ignored() {
        assert!(Scrubber::new(["abc"]).is_empty());
        assert_eq!(Scrubber::new(["abc"]).text("abc"), "abc");
    }

    #[test]
    fn truncation_never_leaves_a_partial_secret() {
        let sc = s();
        for cut in MIN_PARTIAL..TOK.len() {
            for form in [
                TOK.to_string(),
                pct_all(TOK, true),
                TOK.chars()
                    .map(|c| format!("\\u{:04x}", c as u32))
                    .collect(),
                hex::encode(TOK),
            ] {
                for n in [cut, cut * 3, cut * 6] {
                    let n = n.min(form.len() - 1);
                    let text = format!("filler text {}", &form[..n]);
                    let out = sc.text_truncated(&text);
                    assert!(out.starts_with("filler text"), "{out}");
                    let tail = out.trim_end_matches(REDACTED);
                    let decoded = decode(tail.as_bytes())
                        .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
                        .unwrap_or_else(|| tail.to_owned());
                    let low = decoded.to_ascii_lowercase();
                    assert!(
                        !low.ends_with(&TOK[..MIN_PARTIAL].to_ascii_lowercase()),
                        "cut {n} of {form}: {out}"
                    );
                }
            }
        }
        assert_eq!(sc.text_truncated("plain text"), "plain text");
    }

    #[test]
    fn json_values_and_keys() {
        let sc = s();
        let mut v = serde_json::json!({"a": [TOK, 1, {"b": format!("x {TOK}")}], TOK: true});
        sc.json(&mut v);
        let text = v.to_string();
        clean(&text);
        assert_eq!(v["a"][1], 1);
    }

    #[test]
    fn bytes_are_scrubbed() {
        let mut data = vec![0u8, 200, 3];
        data.extend_from_slice(TOK.to_uppercase().as_bytes());
        let out = s().bytes(&data);
        assert!(
            !out.windows(8)
                .any(|w| w.eq_ignore_ascii_case(&TOK.as_bytes()[..8]))
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_never_grows_a_secret(t in "\\PC{0,64}", secret in "[A-Za-z0-9/+=_-]{4,40}") {
            let sc = Scrubber::new([secret.as_str()]);
            let _ = sc.text(&t);
            let _ = sc.text_truncated(&t);
            let mixed = format!("{t}{secret}{t}");
            let out = sc.text(&mixed);
            proptest::prop_assert!(!out.to_ascii_lowercase().contains(&secret.to_ascii_lowercase()));
        }
    }
}
