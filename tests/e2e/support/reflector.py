#!/usr/bin/env python3
"""A hostile upstream API for the credential-leak tests: it finds the credential vault-mcp injected
into a request and echoes it back, encoded in whatever way the request path asks for, so that the
tests can check the vault's scrubber catches every form before anything reaches the model, the logs,
the audit trail or the database.

Dependency-free (stdlib only). Usage:

    reflector.py PORT [--header NAME]... [--query NAME]... [--log FILE]

The credential is looked for, in this order, in: the Authorization header (the value after
"Bearer "; for "Basic " the password of the decoded user:password pair), every header named with
--header (e.g. X-Api-Key), every query parameter named with --query (e.g. api_key).

Echo modes, chosen by the path (the body is `echo=<encoded token>` unless said otherwise; every
answer carries a content type matching the mode):

    /raw /upper /lower /swapcase              text/plain
    /json                                     application/json, the token as an ordinary JSON string
    /json-u                                   application/json, every character written as \\uXXXX
    /json-u-mixed                             application/json, every other character \\u-escaped
    /json-slash                               application/json, "/" written as "\\/"
    /b64 /b64url                              base64 (standard / urlsafe without padding)
    /b64-bearer                               base64 of "Bearer <token>" (token at offset 7: unaligned)
    /b64-offset1 /b64-offset2                 base64 of "x"+token and "xy"+token
    /hex /HEX                                 hex, lower / upper case
    /urlenc /urlenc-lower /urlenc-double      every byte percent-encoded (upper / lower hex / twice)
    /html-entities                            text/html, &#NNN; for every character
    /html-hex                                 text/html, &#xHH; for every character
    /js-x                                     application/javascript, "\\xHH" for every character
    /b64-wrapped                              base64 wrapped with CRLF every 16 characters (MIME/PEM)
    /b64-b64                                  base64 of the base64 of the token
    /layered3                                 HTML entities of JSON \\u escapes of percent-encoding
    /layered4                                 the same around double percent-encoding (4 layers)
    /utf16 /utf16be                           text/plain; charset=utf-16le / utf-16be
    /gzip                                     text/plain with Content-Encoding: gzip, when the request
                                              accepts gzip (what an ordinary server does)
    /status-reason                            200 with the token in the reason phrase
    /form                                     application/x-www-form-urlencoded `token=<form-encoded>`
    /header                                   the token in the response headers X-Echo and Link
    /www-auth                                 401 + WWW-Authenticate: Bearer error="invalid_token",
                                              error_description="token <token> is bad"
    /error-text                               500 text/plain mentioning the token
    /cap?before=N                             text/plain: N filler bytes, the token, 4 KiB more filler
                                              (with a small max_response_bytes the cap cuts the token)
    /binary                                   application/octet-stream bytes around the token
    /redirect/<code>?to=<url>[&hops=N]        <code> in 301 302 303 307 308: Location <url>; with
                                              hops=N first N more redirects to itself (a chain)
    /log                                      a sink: 200 "logged", echoes nothing

Modifiers (query parameters, so they reach us through vault_request's query_params):

    enc=<mode>      for /header, /www-auth, /error-text, /cap, /binary, /form, /utf16, /utf16be,
                    /gzip and /status-reason: write the token in that encoding (any echo-mode name
                    above, e.g. enc=b64) instead of raw
    carry=<mode>    for /redirect: also put the token, so encoded, into the Location URL (?leak=...)

With --log FILE every request (method, path, query string, headers, body, where the credential was
found and the credential itself) is appended to FILE as one JSON line, so a test can assert which
origin received the credential. The log is test scaffolding, not a channel under test.
"""
from __future__ import annotations

import argparse
import base64
import gzip
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FILLER = b"."
REDIRECT_CODES = {301, 302, 303, 307, 308}


# ---------------------------------------------------------------------------------------------
# Encoders: token -> the text a mode writes. Each returns str.
# ---------------------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _json_u(token: str, every: int = 1) -> str:
    """\\uXXXX for every `every`-th character (1 = all), the rest verbatim (with / and " kept safe)."""
    out = []
    for i, c in enumerate(token):
        if i % every == 0:
            out.append("\\u%04x" % ord(c))
        elif c in '"\\':
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


def _chunks(s: str, n: int) -> list[str]:
    return [s[i:i + n] for i in range(0, len(s), n)]


def _pct(token: str, upper: bool = True) -> str:
    fmt = "%%%02X" if upper else "%%%02x"
    return "".join(fmt % b for b in token.encode())


ENCODERS = {
    "raw": lambda t: t,
    "json": lambda t: t,
    "upper": str.upper,
    "lower": str.lower,
    "swapcase": str.swapcase,
    "json-u": lambda t: _json_u(t, 1),
    "json-u-mixed": lambda t: _json_u(t, 2),
    "json-slash": lambda t: t.replace("\\", "\\\\").replace('"', '\\"').replace("/", "\\/"),
    "b64": lambda t: _b64(t.encode()),
    "b64url": lambda t: base64.urlsafe_b64encode(t.encode()).decode().rstrip("="),
    "b64-bearer": lambda t: _b64(b"Bearer " + t.encode()),
    "b64-offset1": lambda t: _b64(b"x" + t.encode()),
    "b64-offset2": lambda t: _b64(b"xy" + t.encode()),
    "hex": lambda t: t.encode().hex(),
    "HEX": lambda t: t.encode().hex().upper(),
    "urlenc": lambda t: _pct(t, True),
    "urlenc-lower": lambda t: _pct(t, False),
    "urlenc-double": lambda t: _pct(_pct(t, True), True),
    "html-entities": lambda t: "".join("&#%d;" % ord(c) for c in t),
    "form": lambda t: urllib.parse.quote_plus(t, safe=""),
    "html-hex": lambda t: "".join("&#x%x;" % ord(c) for c in t),
    "js-x": lambda t: "".join("\\x%02x" % b for b in t.encode()),
    "b64-wrapped": lambda t: "\r\n".join(_chunks(_b64(t.encode()), 16)),
    "b64-b64": lambda t: _b64(_b64(t.encode()).encode()),
    "layered3": lambda t: "".join("&#%d;" % ord(c) for c in _json_u(_pct(t))),
    "layered4": lambda t: "".join("&#%d;" % ord(c) for c in _json_u(_pct(_pct(t)))),
}

# Modes whose body is the token in another character set (bytes, not text).
CHARSETS = {"utf16": "utf-16-le", "utf16be": "utf-16-be"}

# Modes whose body is JSON with the encoded token as a string value written verbatim.
JSON_MODES = {"json", "json-u", "json-u-mixed", "json-slash"}


def encode(mode: str, token: str) -> str:
    return ENCODERS.get(mode, ENCODERS["raw"])(token)


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------

class Reflector(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle + delayed ACK add 40 ms a call.
    disable_nagle_algorithm = True
    server_version = "reflector/1"
    # Set by main().
    cred_headers: list[str] = []
    cred_queries: list[str] = []
    log_path: str | None = None
    log_lock = threading.Lock()

    def log_message(self, fmt, *args):  # keep stderr quiet; the JSONL log is the record
        pass

    # -- credential discovery -----------------------------------------------------------------

    def _credential(self, query: dict[str, list[str]]) -> tuple[str | None, str | None]:
        auth = self.headers.get("Authorization")
        if auth:
            scheme, _, rest = auth.partition(" ")
            if scheme.lower() == "bearer":
                return rest.strip(), "authorization:bearer"
            if scheme.lower() == "basic":
                try:
                    decoded = base64.b64decode(rest.strip()).decode()
                except Exception:
                    return rest.strip(), "authorization:basic-undecodable"
                return decoded.partition(":")[2], "authorization:basic"
            return auth, "authorization"
        for name in self.cred_headers:
            v = self.headers.get(name)
            if v is not None:
                return v, f"header:{name}"
        for name in self.cred_queries:
            if name in query:
                return query[name][0], f"query:{name}"
        return None, None

    # -- plumbing -------------------------------------------------------------------------------

    def _record(self, body: bytes, cred: str | None, via: str | None) -> None:
        if not self.log_path:
            return
        entry = {
            "method": self.command,
            "path": urllib.parse.urlsplit(self.path).path,
            "query": urllib.parse.urlsplit(self.path).query,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("latin-1"),
            "found_via": via,
            "credential": cred,
        }
        with self.log_lock, open(self.log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def _send(self, status: int, body: bytes, ctype: str, headers: list[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _text(self, status: int, text: str, headers: list[tuple[str, str]] = ()) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8", headers)

    def _handle(self) -> None:
        split = urllib.parse.urlsplit(self.path)
        path = split.path
        query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        token, via = self._credential(query)
        self._record(body, token, via)

        mode = path.strip("/").split("/")[0]
        enc = query.get("enc", ["raw"])[0]
        tok = token if token is not None else ""

        if mode == "log":
            return self._text(200, "logged\n")
        if mode == "redirect":
            return self._redirect(path, query, tok)
        if token is None:
            # A test that gets this answer did not inject anything: it proves nothing.
            return self._text(400, "reflector: no credential found in the request\n")

        if mode in JSON_MODES:
            # Written by hand: json.dumps would normalize the escapes we want to send.
            payload = '{"echo": "%s", "mode": "%s"}' % (encode(mode, tok), mode)
            return self._send(200, payload.encode(), "application/json")
        if mode in ENCODERS and mode != "form":
            ctype = {"html-entities": "text/html; charset=utf-8", "html-hex": "text/html; charset=utf-8",
                     "js-x": "application/javascript"}.get(mode, "text/plain; charset=utf-8")
            return self._send(200, f"echo={encode(mode, tok)}\n".encode(), ctype)
        if mode in CHARSETS:
            body = f"echo={encode(enc, tok)}\n".encode(CHARSETS[mode])
            return self._send(200, body, f"text/plain; charset={CHARSETS[mode]}")
        if mode == "gzip":
            body = f"echo={encode(enc, tok)}\n".encode()
            if "gzip" in (self.headers.get("Accept-Encoding") or ""):
                return self._send(200, gzip.compress(body), "text/plain; charset=utf-8",
                                  [("Content-Encoding", "gzip")])
            return self._send(200, body, "text/plain; charset=utf-8")
        if mode == "status-reason":
            self.send_response(200, f"OK token {encode(enc, tok)}")
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"fine\n")
            return None
        if mode == "form":
            # enc=raw means the proper form encoding; any other enc is written as is.
            value = encode("form", tok) if enc == "raw" else encode(enc, tok)
            return self._send(200, f"token={value}&ok=1".encode(), "application/x-www-form-urlencoded")
        if mode == "header":
            value = encode(enc, tok)
            return self._text(200, "see the headers\n", [
                ("X-Echo", value),
                ("Link", f'<https://api.example.com/next?token={value}>; rel="next"'),
            ])
        if mode == "www-auth":
            value = encode(enc, tok)
            return self._text(401, "unauthorized\n", [
                ("WWW-Authenticate", f'Bearer error="invalid_token", error_description="token {value} is bad"'),
            ])
        if mode == "error-text":
            return self._text(500, f"internal error: the token {encode(enc, tok)} was rejected by the backend\n")
        if mode == "cap":
            before = int(query.get("before", ["1000"])[0])
            data = FILLER * before + encode(enc, tok).encode() + FILLER * 4096
            return self._send(200, data, "text/plain; charset=utf-8")
        if mode == "binary":
            data = b"\x00\xff\xfe\x89PNG\r\n\x1a\n" + encode(enc, tok).encode() + b"\x00\x01\x02\xff"
            return self._send(200, data, "application/octet-stream")
        return self._text(404, f"reflector: unknown mode {mode!r}\n")

    def _redirect(self, path: str, query: dict[str, list[str]], tok: str) -> None:
        parts = path.strip("/").split("/")
        try:
            code = int(parts[1])
        except (IndexError, ValueError):
            code = 302
        if code not in REDIRECT_CODES:
            return self._text(400, f"reflector: not a redirect code: {code}\n")
        to = query.get("to", ["/log"])[0]
        hops = int(query.get("hops", ["0"])[0])
        carry = query.get("carry", [None])[0]
        if hops > 0:
            # The next link of the chain: ourselves with one hop less. The credential query
            # parameter (if any) is not copied: the vault adds it again on each same-origin hop.
            nxt = {"to": to, "hops": str(hops - 1)}
            if carry:
                nxt["carry"] = carry
            location = f"/redirect/{code}?" + urllib.parse.urlencode(nxt)
        else:
            location = to
            if carry and tok:
                sep = "&" if "?" in location else "?"
                location += sep + "leak=" + urllib.parse.quote(encode(carry, tok), safe="")
        self._send(code, b"redirecting\n", "text/plain; charset=utf-8", [("Location", location)])

    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("port", type=int)
    ap.add_argument("--header", action="append", default=[], help="a header that may carry the credential")
    ap.add_argument("--query", action="append", default=[], help="a query parameter that may carry it")
    ap.add_argument("--log", help="append every request as a JSON line to this file")
    a = ap.parse_args()
    Reflector.cred_headers = a.header
    Reflector.cred_queries = a.query
    Reflector.log_path = a.log
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", a.port), Reflector).serve_forever()


if __name__ == "__main__":
    main()
