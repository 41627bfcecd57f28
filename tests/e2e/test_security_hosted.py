"""Adversarial suite for hosted mode (`vault-mcp serve --http`): who may call, who may click, where a sign-in
may lead, and whether one user's grants can reach another.

Set-up, shared by the whole module: one Provider (oidc-provider as IdP and third-party provider, plus the
protected API; access tokens live 15 minutes so tokens are minted once), one vault in `jwt` identity mode (with
a policy that holds POST /echo for approval) and, for the consent page, one vault in `oauth` identity mode.
Browser sessions are plain `requests` sessions that sign in through the IdP's login and consent forms.

1. Bearer tokens. Every forged, stale, misdirected or mis-sent token is offered at `POST /mcp` (initialize),
   `GET /sse` and `POST /message`, and must get 401 (403 `insufficient_scope` for a token lacking `mcp:tools`)
   with a `WWW-Authenticate: Bearer … resource_metadata=…` challenge: alg none, HS256 keyed with the IdP's RSA
   public key (key confusion) or a random secret, unknown kid, the real kid with another key's signature,
   wrong/missing aud, wrong iss, expired, nbf ahead, missing sub/exp, a scope without `mcp:tools`, the token in
   the query string, malformed and garbage tokens, a real ID token, a real token for another resource, scheme
   variants, `crit`, and attacker keys offered in the header (`jwk`, `x5c`, `jku`, `x5u` — a local HTTP server
   serving the attacker's key must receive no request). Positive controls (the real token, `bearer`/`BEARER`)
   must pass, so a refusal means the check, not a broken set-up. Tokens signed with the IdP's own key but
   that are not access tokens (`typ` such as `logout+jwt` or `dpop+jwt`) are refused too; `typ: JWT`
   is accepted by default because many IdPs still send it (`[http.idp] strict_token_type = true`
   enforces RFC 9068's `at+jwt`). A future `iat`
   is only recorded (no RFC requires refusing it); an empty `sub` is refused (it would name every such
   caller alike). The table goes to
   target/e2e-artifacts/security-hosted-tokens.json (rewritten after every case, so `-x` keeps it).
2. CSRF and ownership on every state-changing page: Connect authorize and cancel, the approval decision, and
   the `oauth` mode consent decision. Without the form token, with a wrong one, with the right one but sent
   cross-site (`Sec-Fetch-Site: cross-site` / `same-site`, `Origin: https://evil.example`), or by bob (signed
   in) on alice's link with a token from a page rendered for alice or for bob: refused, and the database shows
   nothing changed (session pending, no attempt, approval pending, no authorization code). Each ends with the
   owner's own correct post succeeding, proving the refusals were the checks at work.
3. Sign-in `next=`: `/login?next=<payload>` for open-redirect payloads (`//evil.com`, tab/newline/backslash
   tricks, absolute URLs, dot segments that collapse to `//`), and the same through `/approvals/<payload>`,
   whose sign-in redirect is built from the path. After a real sign-in, the callback's `Location` must stay
   on the vault's origin: no scheme-relative path, no backslash, no control character.
4. Cross-user isolation, randomized (seed printed and written; set SECURITY_SEED to replay): alice and bob
   (tokens minted by oidc-provider) and four more users (tokens signed with the IdP's own key: the login form
   knows only alice and bob, but the vault trusts any subject the IdP signs for) each get 1-3 managed secrets
   with random account labels. Over Streamable HTTP and legacy SSE, every user must list exactly their own
   grants, use each of them, get `grant_not_found` for every other user's grant id and no success for every
   other user's provider+account. {users, grants, checks, crossings} goes to
   target/e2e-artifacts/security-isolation.json; crossings must be 0.
"""
from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import os
import random
import re
import secrets
import threading
import time
import urllib.parse as up
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import jwt as pyjwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from harness import ARTIFACTS, E2E_HOME, HostedVault, Provider, free_port, mint_jwt

TOKENS_ARTIFACT = ARTIFACTS / "security-hosted-tokens.json"
ISOLATION_ARTIFACT = ARTIFACTS / "security-isolation.json"
SEED = int(os.environ.get("SECURITY_SEED") or random.SystemRandom().randrange(2**32))
ISOLATION_USERS = ["alice", "bob", "carol", "dave", "erin", "frank"]  # alice and bob are the IdP's login users

POLICY = """
[[policy.rules]]
id = "echo-posts-need-approval"
paths = ["/echo"]
methods = ["POST"]
effect = "approve"
"""

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "security-suite", "version": "1"}}}
MCP_ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
EVIL = "https://evil.example"


# ---------------------------------------------------------------------------------------------------------------
# Browser-like sign-in with requests (the IdP's login and consent forms, as harness.mint_jwt fills them)
# ---------------------------------------------------------------------------------------------------------------

def drive_idp(s: requests.Session, r: requests.Response, user: str, stop: Callable[[str], bool]) -> str:
    """Follow redirects and fill oidc-provider's login/consent forms until a redirect satisfies `stop`; return
    that URL without loading it."""
    for _ in range(30):
        if r.is_redirect:
            nxt = up.urljoin(r.url, r.headers["location"])
            if stop(nxt):
                return nxt
            r = s.get(nxt, allow_redirects=False, timeout=30)
            continue
        act = re.search(r'action="(/interaction/[^"]+/(?:login|confirm))"', r.text)
        assert act, f"unexpected page at {r.url} ({r.status_code}): {r.text[:300]}"
        r = s.post(up.urljoin(r.url, act.group(1)), data={"username": user, "password": "password"},
                   allow_redirects=False, timeout=30)
    raise AssertionError("sign-in did not finish in 30 steps")


def sign_in(vault: HostedVault, user: str, path: str = "/login?next=/",
            jar: requests.Session | None = None) -> tuple[requests.Session, requests.Response]:
    """Start at `path` on the vault (a page that sends the browser to sign in), sign in as `user` at the IdP,
    and load the vault's callback. Returns the session and the callback's response (not followed)."""
    s = jar or requests.Session()
    r = s.get(vault.base + path, allow_redirects=False, timeout=30)
    assert r.is_redirect, (path, r.status_code, r.text[:300])
    cb = drive_idp(s, r, user, lambda u: u.startswith(vault.base + "/oauth/callback"))
    return s, s.get(cb, allow_redirects=False, timeout=30)


def signed_in(vault: HostedVault, user: str) -> requests.Session:
    s, done = sign_in(vault, user)
    assert done.status_code == 303 and "vault_mcp_session" in s.cookies, (done.status_code, done.text[:300])
    return s


def idp_token_response(provider: Provider, resource: str, user: str = "alice", scope: str = "mcp:tools") -> dict:
    """The whole token response (access and ID token) of a code + PKCE flow as client mcp-user."""
    cb = "http://127.0.0.1:8765/callback"
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    s = requests.Session()
    r = s.get(f"{provider.issuer}/auth?" + up.urlencode({
        "response_type": "code", "client_id": "mcp-user", "redirect_uri": cb, "scope": f"openid {scope}",
        "resource": resource, "state": "s", "login_hint": user, "code_challenge": challenge,
        "code_challenge_method": "S256"}), allow_redirects=False, timeout=30)
    code = dict(up.parse_qsl(up.urlsplit(drive_idp(s, r, user, lambda u: u.startswith(cb))).query))["code"]
    return requests.post(f"{provider.issuer}/token", data={
        "grant_type": "authorization_code", "client_id": "mcp-user", "code": code, "redirect_uri": cb,
        "code_verifier": verifier}, timeout=30).json()


def form_value(html: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert m, f"no hidden `{name}` input in the page: {html[:400]}"
    return m.group(1)


def sha256_hex(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Module fixtures
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def provider():
    p = Provider(ACCESS_TOKEN_TTL="900")
    yield p
    p.stop()


@dataclass
class Lab:
    """The jwt-mode vault and what the tests share about it."""
    vault: HostedVault
    forge: "Forge"
    tokens: dict[str, str]  # user -> bearer token
    grants: dict[str, list[tuple[str, str]]]  # user -> sorted [(grant id, account label)]
    rng: random.Random


@pytest.fixture(scope="module")
def lab(provider):
    print(f"\nsecurity suite seed: {SEED} (replay with SECURITY_SEED={SEED})")
    rng = random.Random(SEED)
    v = HostedVault(provider, identity="jwt", extra_toml=POLICY)
    api_token = provider.client_credentials_token()
    labels: dict[str, list[str]] = {}
    for user in ISOLATION_USERS:
        labels[user] = [f"{user[:2]}-{rng.getrandbits(40):010x}" for _ in range(rng.randint(1, 3))]
        for account in labels[user]:
            v.cli("--as-principal", v.principal(provider, user), "secret", "add", "testapi", "--account", account,
                  "--host", f"127.0.0.1:{provider.api_port}", input=api_token + "\n")
    v.start()
    forge = Forge(provider, v)
    tokens = {u: mint_jwt(provider, v.mcp_url, u) for u in ("alice", "bob")}
    tokens.update({u: forge.sign(forge.claims(sub=u)) for u in ISOLATION_USERS[2:]})
    rows = v.sqlite("SELECT id, principal, account FROM grants")
    grants = {u: sorted((gid, acct) for gid, p, acct in rows if p == v.principal(provider, u)) for u in ISOLATION_USERS}
    assert {u: sorted(a for _, a in g) for u, g in grants.items()} == {u: sorted(l) for u, l in labels.items()}
    yield Lab(v, forge, tokens, grants, rng)
    v.stop()
    v.cleanup()


@pytest.fixture(scope="module")
def browsers(lab):
    """Signed-in browser sessions of alice and bob at the jwt-mode vault."""
    return {u: signed_in(lab.vault, u) for u in ("alice", "bob")}


@pytest.fixture(scope="module")
def oauth_vault(provider):
    v = HostedVault(provider, identity="oauth")
    v.start()
    yield v
    v.stop()
    v.cleanup()


# ---------------------------------------------------------------------------------------------------------------
# 1. Bearer tokens
# ---------------------------------------------------------------------------------------------------------------

def b64url(data: bytes | dict) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class KeyServer:
    """A local HTTP server an attacker's `jku`/`x5u` header points at. It serves the attacker's key and
    records every request: the vault must never fetch from it."""

    def __init__(self, jwks: dict, cert_pem: bytes):
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                outer.requests.append(self.path)
                body = json.dumps(jwks).encode() if self.path.startswith("/jwks") else cert_pem
                self.send_response(200)
                self.send_header("Content-Type", "application/json" if self.path.startswith("/jwks") else "application/pem-certificate-chain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


DROP = object()  # a claim value meaning "leave the claim out"


class Forge:
    """Signs tokens with the IdP's real keys (oidc-provider's private JWKS) or with an attacker's."""

    def __init__(self, provider: Provider, vault: HostedVault):
        self.provider, self.vault = provider, vault
        keys = json.loads((E2E_HOME / "oidc-state" / "jwks.private.json").read_text())["keys"]
        self.rsa_jwk = next(k for k in keys if k["kty"] == "RSA")
        self.ec_jwk = next(k for k in keys if k["kty"] == "EC")
        self.rsa = pyjwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(self.rsa_jwk))
        self.rsa_pub_pem = self.rsa.public_key().public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        self.attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.attacker_ec = ec.generate_private_key(ec.SECP256R1())
        self.attacker_jwk = {**json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(self.attacker.public_key())),
                             "kid": "attacker-key", "alg": "RS256", "use": "sig"}
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.attacker_cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                              .public_key(self.attacker.public_key()).serial_number(x509.random_serial_number())
                              .not_valid_before(now - datetime.timedelta(days=1))
                              .not_valid_after(now + datetime.timedelta(days=30))
                              .sign(self.attacker, hashes.SHA256()))
        self.keyserver: KeyServer | None = None

    def claims(self, **over) -> dict:
        now = int(time.time())
        c = {"iss": self.provider.issuer, "sub": "alice", "aud": self.vault.mcp_url, "iat": now, "exp": now + 600,
             "scope": "mcp:tools", "client_id": "mcp-user", "jti": secrets.token_hex(8)}
        c.update(over)
        return {k: v for k, v in c.items() if v is not DROP}

    def sign(self, claims: dict, key=None, alg: str = "RS256", kid: str | None = "real", **header) -> str:
        h = {"typ": "at+jwt", **header}
        if kid == "real":
            h["kid"] = self.rsa_jwk["kid"] if alg.startswith(("RS", "PS")) else self.ec_jwk["kid"]
        elif kid is not None:
            h["kid"] = kid
        return pyjwt.encode(claims, self.rsa if key is None else key, algorithm=alg, headers=h)

    def raw(self, header: dict, claims: dict, signer: Callable[[bytes], bytes] | None) -> str:
        signing_input = f"{b64url(header)}.{b64url(claims)}"
        return f"{signing_input}.{b64url(signer(signing_input.encode())) if signer else ''}"

    def hs256(self, secret: bytes, kid: str | None) -> str:
        header = {"alg": "HS256", "typ": "at+jwt", **({"kid": kid} if kid else {})}
        return self.raw(header, self.claims(), lambda m: hmac.new(secret, m, hashlib.sha256).digest())

    def x5c(self) -> list[str]:
        return [base64.b64encode(self.attacker_cert.public_bytes(serialization.Encoding.DER)).decode()]


@dataclass
class TokenCase:
    description: str
    expect: str  # "401", "403", "accept" or "record" (outcome only recorded)
    build: Callable[["TokenLab"], tuple[dict, dict]]  # -> (extra request headers, query params)


@dataclass
class TokenLab:
    forge: Forge
    vault: HostedVault
    provider: Provider
    good: str  # a real access token for alice, minted by oidc-provider
    cache: dict = field(default_factory=dict)

    def once(self, key: str, make: Callable[[], str]) -> str:
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]


def bearer(token_of: Callable[[TokenLab], str], scheme: str = "Bearer") -> Callable[[TokenLab], tuple[dict, dict]]:
    return lambda t: ({"Authorization": f"{scheme} {token_of(t)}"}, {})


F = lambda t: t.forge  # noqa: E731 (short accessor for the table below)

TOKEN_CASES: dict[str, TokenCase] = {
    # positive controls: if these fail, every refusal below proves nothing
    "control-real-token": TokenCase("the real access token (control)", "accept", bearer(lambda t: t.good)),
    "control-lowercase-bearer": TokenCase("`bearer` in lower case is still Bearer (control)", "accept",
                                          bearer(lambda t: t.good, "bearer")),
    "control-uppercase-bearer": TokenCase("`BEARER` in upper case is still Bearer (control)", "accept",
                                          bearer(lambda t: t.good, "BEARER")),
    "control-forged-claims-real-key": TokenCase("claims signed with the IdP's real key (control for the forgeries)",
                                                "accept", bearer(lambda t: F(t).sign(F(t).claims()))),
    # algorithm and key attacks
    "alg-none": TokenCase("alg none, empty signature", "401",
                          bearer(lambda t: F(t).raw({"alg": "none", "typ": "at+jwt"}, F(t).claims(), None))),
    "alg-None-real-kid": TokenCase("alg `None` with the real kid", "401", bearer(
        lambda t: F(t).raw({"alg": "None", "typ": "at+jwt", "kid": F(t).rsa_jwk["kid"]}, F(t).claims(), None))),
    "hs256-rsa-public-key": TokenCase("HS256 keyed with the IdP's RSA public key (PEM), real kid (key confusion)", "401",
                                      bearer(lambda t: F(t).hs256(F(t).rsa_pub_pem, F(t).rsa_jwk["kid"]))),
    "hs256-rsa-public-key-no-kid": TokenCase("HS256 keyed with the RSA public key, no kid", "401",
                                             bearer(lambda t: F(t).hs256(F(t).rsa_pub_pem, None))),
    "hs256-random-secret": TokenCase("HS256 with a random secret", "401",
                                     bearer(lambda t: F(t).hs256(secrets.token_bytes(32), None))),
    "rs256-unknown-kid": TokenCase("RS256 by a key not in the JWKS (unknown kid)", "401",
                                   bearer(lambda t: F(t).sign(F(t).claims(), key=F(t).attacker, kid="no-such-key"))),
    "rs256-real-kid-other-key": TokenCase("the real kid, signed by another key", "401",
                                          bearer(lambda t: F(t).sign(F(t).claims(), key=F(t).attacker))),
    "rs256-no-kid-other-key": TokenCase("no kid, signed by another key", "401",
                                        bearer(lambda t: F(t).sign(F(t).claims(), key=F(t).attacker, kid=None))),
    "rs256-with-ec-kid": TokenCase("RS256 naming the IdP's EC key id (family mismatch)", "401",
                                   bearer(lambda t: F(t).sign(F(t).claims(), key=F(t).attacker, kid=F(t).ec_jwk["kid"]))),
    "es256-with-rsa-kid": TokenCase("ES256 by an attacker's EC key naming the RSA key id", "401",
                                    bearer(lambda t: F(t).sign(F(t).claims(), key=F(t).attacker_ec, alg="ES256",
                                                               kid=F(t).rsa_jwk["kid"]))),
    "signature-stripped": TokenCase("the real token with its signature removed", "401",
                                    bearer(lambda t: t.good.rsplit(".", 1)[0] + ".")),
    "payload-swapped": TokenCase("alice's signature over a payload changed to sub=bob", "401", bearer(
        lambda t: ".".join([t.good.split(".")[0], b64url(F(t).claims(sub="bob")), t.good.split(".")[2]]))),
    "jwk-header-attacker-key": TokenCase("attacker's public key embedded as `jwk`, signed by it (no kid)", "401",
                                         bearer(lambda t: F(t).sign(F(t).claims(), key=F(t).attacker, kid=None,
                                                                    jwk=F(t).attacker_jwk))),
    "jwk-header-real-kid": TokenCase("attacker's `jwk` embedded with the real kid", "401",
                                     bearer(lambda t: F(t).sign(F(t).claims(), key=F(t).attacker, jwk=F(t).attacker_jwk))),
    "x5c-header-attacker-cert": TokenCase("attacker's self-signed certificate as `x5c`", "401",
                                          bearer(lambda t: F(t).sign(F(t).claims(), key=F(t).attacker, kid=None, x5c=F(t).x5c()))),
    "jku-header": TokenCase("`jku` pointing at an attacker JWKS (must not be fetched)", "401", bearer(
        lambda t: F(t).sign(F(t).claims(), key=F(t).attacker, kid="attacker-key", jku=f"{F(t).keyserver.url}/jwks.json"))),
    "x5u-header": TokenCase("`x5u` pointing at an attacker certificate (must not be fetched)", "401", bearer(
        lambda t: F(t).sign(F(t).claims(), key=F(t).attacker, kid="attacker-key", x5u=f"{F(t).keyserver.url}/cert.pem"))),
    "crit-unknown-extension": TokenCase("real key, `crit` naming an extension the server cannot know (RFC 7515 4.1.11)",
                                        "401", bearer(lambda t: F(t).sign(F(t).claims(), crit=["urn:example:must-understand"],
                                                                          **{"urn:example:must-understand": "x"}))),
    # Many IdPs (Entra ID, older Okta/Auth0 setups) still mark access tokens `typ: JWT`; vault-mcp
    # accepts that by default and refuses it with `[http.idp] strict_token_type = true`. Token types
    # that are not access tokens at all are refused either way.
    "typ-logout-jwt": TokenCase("real key, valid claims, typ `logout+jwt` (not an access token)", "401",
                                bearer(lambda t: F(t).sign(F(t).claims(), typ="logout+jwt"))),
    "typ-dpop-jwt": TokenCase("real key, valid claims, typ `dpop+jwt` (a DPoP proof, not an access token)", "401",
                              bearer(lambda t: F(t).sign(F(t).claims(), typ="dpop+jwt"))),
    # claims
    "wrong-aud": TokenCase("aud of another service", "401",
                           bearer(lambda t: F(t).sign(F(t).claims(aud="http://127.0.0.1:9/mcp")))),
    "aud-public-url-not-mcp": TokenCase("aud = the vault's public URL instead of its /mcp resource", "401",
                                        bearer(lambda t: F(t).sign(F(t).claims(aud=t.vault.base + "/")))),
    "aud-missing": TokenCase("no aud claim", "401", bearer(lambda t: F(t).sign(F(t).claims(aud=DROP)))),
    "wrong-iss": TokenCase("iss of another issuer", "401",
                           bearer(lambda t: F(t).sign(F(t).claims(iss="http://127.0.0.1:1/evil")))),
    "iss-missing": TokenCase("no iss claim", "401", bearer(lambda t: F(t).sign(F(t).claims(iss=DROP)))),
    "expired": TokenCase("expired 10 minutes ago", "401", bearer(
        lambda t: F(t).sign(F(t).claims(exp=int(time.time()) - 600, iat=int(time.time()) - 900)))),
    "exp-missing": TokenCase("no exp claim", "401", bearer(lambda t: F(t).sign(F(t).claims(exp=DROP)))),
    "nbf-future": TokenCase("nbf one hour ahead", "401", bearer(lambda t: F(t).sign(F(t).claims(nbf=int(time.time()) + 3600)))),
    "sub-missing": TokenCase("no sub claim", "401", bearer(lambda t: F(t).sign(F(t).claims(sub=DROP)))),
    "scope-without-mcp-tools": TokenCase("real IdP token with scope mcp:admin only", "403", bearer(
        lambda t: t.once("admin", lambda: mint_jwt(t.provider, t.vault.mcp_url, "alice", scope="mcp:admin")))),
    "scope-lookalike": TokenCase("scope `mcp:toolsx mcp:tools:read` (look-alikes only)", "403",
                                 bearer(lambda t: F(t).sign(F(t).claims(scope="mcp:toolsx mcp:tools:read")))),
    "scope-missing": TokenCase("no scope claim", "403", bearer(lambda t: F(t).sign(F(t).claims(scope=DROP)))),
    "id-token": TokenCase("a real ID token (aud = client id mcp-user) instead of an access token", "401", bearer(
        lambda t: t.once("idtok", lambda: idp_token_response(t.provider, t.vault.mcp_url)["id_token"]))),
    "other-resource-token": TokenCase("a real access token minted for another resource URL", "401", bearer(
        lambda t: t.once("other", lambda: mint_jwt(t.provider, "http://127.0.0.1:9/mcp")))),
    # transport of the token
    "query-access-token": TokenCase("the real token in ?access_token= (no header)", "401",
                                    lambda t: ({}, {"access_token": t.good})),
    "query-and-header": TokenCase("the real token in ?access_token= and in the header", "401",
                                  lambda t: ({"Authorization": f"Bearer {t.good}"}, {"access_token": t.good})),
    "no-authorization": TokenCase("no Authorization header", "401", lambda t: ({}, {})),
    "malformed-two-parts": TokenCase("two dot-separated parts", "401", bearer(lambda t: ".".join(t.good.split(".")[:2]))),
    "malformed-four-parts": TokenCase("four dot-separated parts", "401", bearer(lambda t: t.good + ".AAAA")),
    "garbage-base64": TokenCase("three parts of garbage base64", "401", bearer(lambda t: "%%%.!!!.***")),
    "bearer-lowercase-garbage": TokenCase("`bearer` + garbage: parsed as Bearer, refused as invalid_token", "401",
                                          bearer(lambda t: "not-a-jwt", "bearer")),
    "scheme-missing": TokenCase("the real token without a scheme", "401", lambda t: ({"Authorization": t.good}, {})),
    "scheme-glued": TokenCase("`Bearer<token>` without a space", "401", lambda t: ({"Authorization": "Bearer" + t.good}, {})),
    "bearer-empty": TokenCase("`Bearer ` with no token", "401", lambda t: ({"Authorization": "Bearer "}, {})),
    "basic-scheme": TokenCase("Basic credentials", "401", bearer(lambda t: "YWxpY2U6cGFzc3dvcmQ=", "Basic")),
    "token-scheme": TokenCase("the real token under scheme `Token`", "401", bearer(lambda t: t.good, "Token")),
    # recorded only: no RFC requires refusing these (RFC 9068 section 4 does not list iat)
    "iat-far-future": TokenCase("real key, iat one year ahead (recorded only)", "record",
                                bearer(lambda t: F(t).sign(F(t).claims(iat=int(time.time()) + 365 * 86400)))),
    "sub-empty": TokenCase("real key, sub = \"\" (would name every such caller alike)", "401",
                           bearer(lambda t: F(t).sign(F(t).claims(sub="")))),
}

ENDPOINTS = ("POST /mcp", "GET /sse", "POST /message")


def probe(vault: HostedVault, endpoint: str, headers: dict, params: dict) -> requests.Response:
    """One request at a protected endpoint; only status and headers are read (streams are closed at once)."""
    if endpoint == "POST /mcp":
        r = requests.post(vault.mcp_url, json=INIT, headers={**MCP_ACCEPT, **headers}, params=params, stream=True, timeout=20)
    elif endpoint == "GET /sse":
        r = requests.get(f"{vault.base}/sse", headers={"Accept": "text/event-stream", **headers}, params=params,
                         stream=True, timeout=20)
    else:
        r = requests.post(f"{vault.base}/message", params={"sessionId": "no-such-session", **params},
                          json={"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers=headers, stream=True, timeout=20)
    r.close()
    return r


def challenge_error(www: str) -> str:
    m = re.search(r'error="([^"]*)"', www)
    return m.group(1) if m else ""


TOKEN_ROWS: dict[str, dict] = {}


@pytest.fixture(scope="module")
def token_lab(provider, lab):
    forge = lab.forge
    forge.keyserver = KeyServer({"keys": [forge.attacker_jwk]},
                                forge.attacker_cert.public_bytes(serialization.Encoding.PEM))
    yield TokenLab(forge, lab.vault, provider, lab.tokens["alice"])
    forge.keyserver.stop()


def write_token_table() -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    TOKENS_ARTIFACT.write_text(json.dumps({
        "endpoints": list(ENDPOINTS),
        "cases": list(TOKEN_ROWS.values()),
        "summary": {"cases": len(TOKEN_ROWS),
                    "failed": sorted(k for k, v in TOKEN_ROWS.items() if v["passed"] is False)},
    }, indent=2) + "\n")


@pytest.mark.parametrize("case_id", list(TOKEN_CASES))
def test_bearer_token_case(token_lab, case_id):
    case = TOKEN_CASES[case_id]
    headers, params = case.build(token_lab)
    row = {"case": case_id, "description": case.description, "expected": case.expect, "results": {}, "passed": None}
    problems = []
    for endpoint in ENDPOINTS:
        r = probe(token_lab.vault, endpoint, headers, params)
        www = r.headers.get("www-authenticate", "")
        row["results"][endpoint] = {"status": r.status_code, "error": challenge_error(www),
                                    "challenge": bool(www)}
        if case.expect == "accept":
            if r.status_code in (401, 403):
                problems.append(f"{endpoint}: refused ({r.status_code}, {www})")
        elif case.expect in ("401", "403"):
            if r.status_code != int(case.expect):
                problems.append(f"{endpoint}: HTTP {r.status_code}, expected {case.expect}")
            if not (www.lower().startswith("bearer ") and "resource_metadata=" in www):
                problems.append(f"{endpoint}: challenge {www!r} lacks `Bearer … resource_metadata=`")
            if case.expect == "403" and challenge_error(www) != "insufficient_scope":
                problems.append(f"{endpoint}: challenge error {challenge_error(www)!r}, expected insufficient_scope")
            if case_id == "bearer-lowercase-garbage" and challenge_error(www) != "invalid_token":
                problems.append(f"{endpoint}: `bearer` was not parsed as a Bearer token ({www!r})")
    fetched = list(token_lab.forge.keyserver.requests)
    if fetched:
        problems.append(f"the vault fetched attacker-controlled key URLs: {fetched}")
    row["attacker_key_server_requests"] = len(fetched)
    row["passed"] = None if case.expect == "record" else not problems
    row["problems"] = problems
    TOKEN_ROWS[case_id] = row
    write_token_table()
    assert not problems, f"{case_id} ({case.description}): " + "; ".join(problems)


def test_token_table_complete_and_server_alive(token_lab):
    """At least 20 distinct refusals, and the attacker's key server never heard from the vault."""
    refused = [c for c in TOKEN_CASES.values() if c.expect in ("401", "403")]
    assert len(refused) >= 20
    assert token_lab.forge.keyserver.requests == []
    assert TOKENS_ARTIFACT.exists()
    assert requests.get(f"{token_lab.vault.base}/healthz", timeout=10).status_code == 200


# ---------------------------------------------------------------------------------------------------------------
# 2. CSRF and ownership on state-changing pages
# ---------------------------------------------------------------------------------------------------------------

async def _call(vault: HostedVault, token: str, tool: str, args: dict) -> dict:
    async with vault.http_session(token) as s:
        r = await s.call_tool(tool, args)
        return r.structured_content or {}


def connect_link(lab: Lab, provider: Provider, user: str) -> str:
    out = asyncio.run(_call(lab.vault, lab.tokens[user], "vault_request",
                            {"method": "GET", "url": f"{provider.api}/user", "provider": "testbed"}))
    assert out.get("error") == "authorization_required", out
    url = out["connect_url"]
    assert url.startswith(lab.vault.base + "/connect/"), url
    return url.rsplit("/", 1)[1]


def post_form(session, url: str, form: dict, headers: dict | None = None) -> requests.Response:
    """A form post as a browser sends it: always urlencoded, even with no fields (requests would otherwise
    send no Content-Type, and the refusal would be the form parser's, not the CSRF check's)."""
    return session.post(url, data=up.urlencode(form), allow_redirects=False, timeout=20,
                        headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})})


def refusal_cases(csrf_alice: str) -> list[tuple[str, dict, dict]]:
    """(name, form fields, extra headers) of posts by the owner that must be refused."""
    return [
        ("no csrf field", {}, {}),
        ("empty csrf", {"csrf": ""}, {}),
        ("wrong csrf", {"csrf": base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()}, {}),
        ("csrf of another form tampered", {"csrf": csrf_alice[:-2] + ("AA" if not csrf_alice.endswith("AA") else "BB")}, {}),
        ("right csrf, Sec-Fetch-Site: cross-site", {"csrf": csrf_alice}, {"Sec-Fetch-Site": "cross-site"}),
        ("right csrf, Sec-Fetch-Site: same-site", {"csrf": csrf_alice}, {"Sec-Fetch-Site": "same-site"}),
        ("right csrf, Origin: https://evil.example", {"csrf": csrf_alice}, {"Origin": EVIL}),
        ("right csrf, Origin evil + Referer evil", {"csrf": csrf_alice}, {"Origin": EVIL, "Referer": EVIL + "/x"}),
    ]


def connect_state(vault: HostedVault, token: str) -> tuple[str, int]:
    sid = sha256_hex(token)
    status = vault.sqlite(f"SELECT status FROM connect_sessions WHERE id = '{sid}'")
    attempts = vault.sqlite(f"SELECT count(*) FROM connect_attempts WHERE session_id = '{sid}'")[0][0]
    assert status, f"no connect session for the link {sid[:8]}"
    return status[0][0], attempts


@pytest.mark.parametrize("action", ["authorize", "cancel"])
def test_connect_forms_refuse_forgery_and_other_users(provider, lab, browsers, action):
    vault = lab.vault
    alice_link, bob_link = connect_link(lab, provider, "alice"), connect_link(lab, provider, "bob")
    page = browsers["alice"].get(f"{vault.base}/connect/{alice_link}", timeout=20)
    assert page.status_code == 200, page.text[:300]
    csrf_alice = form_value(page.text, "csrf")
    csrf_bob = form_value(browsers["bob"].get(f"{vault.base}/connect/{bob_link}", timeout=20).text, "csrf")
    # bob cannot even get a form for alice's link
    peek = browsers["bob"].get(f"{vault.base}/connect/{alice_link}", timeout=20)
    assert peek.status_code == 403 and 'name="csrf"' not in peek.text, (peek.status_code, peek.text[:300])
    url = f"{vault.base}/connect/{alice_link}/{action}"
    extra = {"provider": "testbed"} if action == "authorize" else {}
    outcomes = []  # (what, HTTP status, refused as it should be)
    for name, form, headers in refusal_cases(csrf_alice):
        r = post_form(browsers["alice"], url, {**extra, **form}, headers)
        outcomes.append((f"alice: {name}", r.status_code, r.status_code == 403))
    for name, csrf in (("bob with the csrf of alice's page", csrf_alice), ("bob with the csrf of bob's own page", csrf_bob)):
        r = post_form(browsers["bob"], url, {**extra, "csrf": csrf})
        outcomes.append((name, r.status_code, r.status_code in (403, 404)))
    # signed out: sent to sign in at the IdP (never on to the provider), nothing done
    r = post_form(requests, url, {**extra, "csrf": csrf_alice})
    loc = r.headers.get("location", "")
    outcomes.append(("signed out, right csrf", r.status_code,
                     r.status_code in (401, 403) or (r.status_code == 303 and "client_id=mcp-user" in loc)))
    wrong = [o for o in outcomes if not o[2]]
    print("\n".join(f"{what}: HTTP {status}" for what, status, _ in outcomes))
    assert not wrong, f"{action}: posts that were not refused: {wrong}"
    assert connect_state(vault, alice_link) == ("pending", 0), "a refused post changed alice's Connect session"
    assert vault.sqlite("SELECT principal FROM grants WHERE provider = 'testbed'") == [], "a refused post created a grant"
    # the owner's own post, from the page, goes through: the refusals above were the checks
    r = post_form(browsers["alice"], url, {**extra, "csrf": csrf_alice},
                  {"Sec-Fetch-Site": "same-origin", "Origin": vault.base})
    if action == "authorize":
        assert r.status_code == 303 and r.headers["location"].startswith(provider.issuer + "/auth?"), (r.status_code, r.text[:300])
        assert connect_state(vault, alice_link) == ("pending", 1)
    else:
        assert r.status_code == 200, (r.status_code, r.text[:300])
        assert connect_state(vault, alice_link)[0] != "pending"


def approval_link(lab: Lab, provider: Provider, user: str) -> tuple[str, str]:
    grant_id = lab.grants[user][0][0]
    out = asyncio.run(_call(lab.vault, lab.tokens[user], "vault_request", {
        "method": "POST", "url": f"{provider.api}/echo", "grant_id": grant_id, "json": {"n": 1},
        "reason": "security suite"}))
    assert out.get("error") == "approval_required" and out.get("approval_url"), out
    return out["approval_id"], out["approval_url"]


def test_approval_decision_refuses_forgery_and_other_users(provider, lab, browsers):
    vault = lab.vault
    alice_id, alice_url = approval_link(lab, provider, "alice")
    _, bob_url = approval_link(lab, provider, "bob")
    assert alice_url.startswith(vault.base + "/approvals/"), alice_url
    page = browsers["alice"].get(alice_url, timeout=20)
    assert page.status_code == 200, page.text[:300]
    csrf_alice = form_value(page.text, "csrf")
    csrf_bob = form_value(browsers["bob"].get(bob_url, timeout=20).text, "csrf")
    peek = browsers["bob"].get(alice_url, timeout=20)
    assert peek.status_code in (403, 404) and 'name="csrf"' not in peek.text, (peek.status_code, peek.text[:300])
    outcomes = []  # (what, HTTP status, refused as it should be)
    for decision in ("approve", "deny"):
        for name, form, headers in refusal_cases(csrf_alice):
            r = post_form(browsers["alice"], alice_url, {"decision": decision, **form}, headers)
            outcomes.append((f"alice {decision}: {name}", r.status_code, r.status_code == 403))
        for name, csrf in (("bob with the csrf of alice's page", csrf_alice), ("bob with the csrf of bob's own page", csrf_bob)):
            r = post_form(browsers["bob"], alice_url, {"decision": decision, "csrf": csrf})
            outcomes.append((f"{name} ({decision})", r.status_code, r.status_code in (403, 404)))
    r = post_form(requests, alice_url, {"decision": "approve", "csrf": csrf_alice})
    outcomes.append(("signed out, right csrf", r.status_code, r.status_code in (401, 403)
                     or (r.status_code == 303 and "client_id=mcp-user" in r.headers.get("location", ""))))
    wrong = [o for o in outcomes if not o[2]]
    print("\n".join(f"{what}: HTTP {status}" for what, status, _ in outcomes))
    assert not wrong, f"approval posts that were not refused: {wrong}"
    status = vault.sqlite(f"SELECT status, decided_by FROM approvals WHERE id = '{alice_id}'")
    assert status == [("pending", None)], f"a refused post decided alice's approval: {status}"
    r = post_form(browsers["alice"], alice_url, {"decision": "approve", "csrf": csrf_alice}, {"Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert vault.sqlite(f"SELECT status FROM approvals WHERE id = '{alice_id}'") == [("approved",)]


@dataclass
class ConsentLab:
    vault: HostedVault
    provider: Provider
    browsers: dict[str, requests.Session]
    client_id: str
    redirect: str

    def open_consent(self, user: str) -> tuple[str, str]:
        """`user` starts an authorization at the consent page; returns (request id, csrf) from the page."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        r = self.browsers[user].get(f"{self.vault.base}/authorize", params={
            "response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect, "state": f"st-{user}",
            "code_challenge": challenge, "code_challenge_method": "S256", "scope": "mcp:tools",
            "resource": self.vault.mcp_url}, allow_redirects=False, timeout=20)
        assert r.status_code == 200 and 'id="approve-client"' in r.text, (r.status_code, r.text[:300])
        return form_value(r.text, "request"), form_value(r.text, "csrf")

    def codes(self) -> list[tuple[str]]:
        return self.vault.sqlite("SELECT principal FROM oauth_codes ORDER BY rowid")

    def pending(self, request_id: str) -> bool:
        return bool(self.vault.sqlite(f"SELECT 1 FROM oauth_requests WHERE id = '{sha256_hex(request_id)}'"))


@pytest.fixture(scope="module")
def consent(provider, oauth_vault):
    redirect = f"http://127.0.0.1:{free_port()}/oauth/callback"  # nothing listens: codes are read from Location
    reg = requests.post(f"{oauth_vault.base}/register", json={
        "redirect_uris": [redirect], "client_name": "security suite", "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"]}, timeout=20)
    assert reg.status_code == 201, reg.text
    return ConsentLab(oauth_vault, provider, {u: signed_in(oauth_vault, u) for u in ("alice", "bob")},
                      reg.json()["client_id"], redirect)


def test_consent_decision_refuses_forgery_and_other_users(consent):
    c, url = consent, f"{consent.vault.base}/authorize/decision"
    request_a, csrf_a = c.open_consent("alice")
    request_b, csrf_b = c.open_consent("bob")
    before = c.codes()
    outcomes = []
    for decision in ("approve", "deny"):
        for name, form, headers in refusal_cases(csrf_a):
            r = post_form(c.browsers["alice"], url, {"request": request_a, "decision": decision, **form}, headers)
            # a missing field is rejected by the form parser (422) before the handler runs; that refuses too
            ok = r.status_code == 403 or (name == "no csrf field" and r.status_code in (400, 422))
            outcomes.append((f"alice {decision}: {name}", r.status_code, ok))
        for name, csrf in (("bob with the csrf of alice's page", csrf_a), ("bob with the csrf of bob's own page", csrf_b)):
            r = post_form(c.browsers["bob"], url, {"request": request_a, "decision": decision, "csrf": csrf})
            outcomes.append((f"{name} ({decision})", r.status_code, r.status_code in (403, 404)))
    r = post_form(requests, url, {"request": request_a, "decision": "approve", "csrf": csrf_a})
    outcomes.append(("signed out, right csrf", r.status_code, r.status_code in (401, 403)))
    wrong = [o for o in outcomes if not o[2]]
    print("\n".join(f"{what}: HTTP {status}" for what, status, _ in outcomes))
    assert not wrong, f"consent posts that were not refused: {wrong}"
    assert c.codes() == before, "a refused consent post issued an authorization code"
    assert c.pending(request_a), "a refused consent post used up alice's authorization request"
    r = post_form(c.browsers["alice"], url, {"request": request_a, "decision": "approve", "csrf": csrf_a},
                  {"Sec-Fetch-Site": "same-origin"})
    q = dict(up.parse_qsl(up.urlsplit(r.headers.get("location", "")).query))
    assert r.status_code in (302, 303) and q.get("code") and q.get("state") == "st-alice", (r.status_code, r.headers)
    assert c.codes() == before + [(c.vault.principal(c.provider, "alice"),)]
    assert c.pending(request_b), "bob's own request is untouched"


def test_consent_request_cannot_be_completed_by_another_user(consent):
    """bob, holding the id of an authorization request alice started (it is in her consent form, and in her
    address bar as /authorize/continue?request=… when she had to sign in first), opens its consent page under
    his own session and approves it. The vault must refuse: otherwise it issues a code for bob, bound to
    alice's PKCE challenge and carrying alice's `state`, which alice's client accepts if bob gets the callback
    to it — bob's identity injected into alice's MCP client, and whatever she connects through it lands in
    bob's account."""
    c, url = consent, f"{consent.vault.base}/authorize/decision"
    request_a, _ = c.open_consent("alice")
    before = c.codes()
    page = c.browsers["bob"].get(f"{c.vault.base}/authorize/continue", params={"request": request_a},
                                 allow_redirects=False, timeout=20)
    if page.status_code == 200 and 'name="csrf"' in page.text:  # else: refused already at the page
        csrf_bob = form_value(page.text, "csrf")
        r = post_form(c.browsers["bob"], url, {"request": request_a, "decision": "approve", "csrf": csrf_bob})
        q = dict(up.parse_qsl(up.urlsplit(r.headers.get("location", "")).query))
        issued = c.codes()[len(before):]
        assert not q.get("code") and issued == [], (
            f"bob completed alice's authorization request: consent page rendered for bob (HTTP {page.status_code}), "
            f"decision HTTP {r.status_code} → code issued for {issued} to {r.headers.get('location', '')[:60]}…")
        assert c.pending(request_a), "bob's refused decision used up alice's authorization request"


# ---------------------------------------------------------------------------------------------------------------
# 3. Sign-in `next=`
# ---------------------------------------------------------------------------------------------------------------

NEXT_PAYLOADS = {
    "scheme-relative": "//evil.com",
    "tab": "/\t/evil.com",
    "percent-09-literal": "/%09/evil.com",
    "backslash": "/\\evil.com",
    "double-backslash": "\\\\evil.com",
    "absolute-https": "https://evil.com",
    "absolute-no-slashes": "https:evil.com",
    "newline": "/\n/evil.com",
    "crlf": "/\r\n/evil.com",
    "space": "/ /evil.com",
    "userinfo": "//127.0.0.1@evil.com",
    "dot-slash-slash": "/.//evil.com",
    "dotdot-slash-slash": "/..//evil.com",
    "segment-dotdot-slash-slash": "/x/..//evil.com",
    "encoded-dot": "/%2e//evil.com",
    "encoded-dotdot": "/x/%2E%2E//evil.com",
    "encoded-slashes": "/%2F%2Fevil.com",
    "nel": "/\u0085/evil.com",
}

# The approval page starts a sign-in for its own path before it looks the token up, so the path is the payload.
PATH_PAYLOADS = {
    "approvals-dotdot-encoded": "/approvals/..%2F%2Fevil.com",
    "approvals-encoded-dotdot": "/approvals/%2E%2E%2F%2Fevil.com",
    "approvals-dotdot-backslash": "/approvals/..%5C%5Cevil.com",
}


def assert_stays_home(vault: HostedVault, start: str, done: requests.Response, jar: requests.Session) -> None:
    assert done.status_code == 303 and "vault_mcp_session" in jar.cookies, (start, done.status_code, done.text[:200])
    loc = done.headers.get("location", "")
    home = up.urlsplit(vault.base)
    assert not any(ord(ch) < 0x20 or ord(ch) == 0x7F or ch.isspace() for ch in loc), (start, loc)
    assert "\\" not in loc, f"{start!r}: Location {loc!r} has a backslash (browsers read it as /)"
    assert not loc.startswith("//"), f"{start!r}: Location {loc!r} is scheme-relative: it leaves the vault"
    target = up.urlsplit(up.urljoin(vault.base + "/", loc))
    assert (target.scheme, target.netloc) == (home.scheme, home.netloc), f"{start!r}: Location {loc!r} → {target.geturl()}"


@pytest.fixture(scope="module")
def next_jar():
    return requests.Session()


@pytest.mark.parametrize("name", list(NEXT_PAYLOADS))
def test_login_next_never_leaves_the_vault(lab, next_jar, name):
    start = "/login?" + up.urlencode({"next": NEXT_PAYLOADS[name]})
    _, done = sign_in(lab.vault, "alice", start, jar=next_jar)
    assert_stays_home(lab.vault, start, done, next_jar)


@pytest.mark.parametrize("name", list(PATH_PAYLOADS))
def test_page_path_sign_in_never_leaves_the_vault(lab, name):
    jar = requests.Session()
    _, done = sign_in(lab.vault, "alice", PATH_PAYLOADS[name], jar=jar)
    assert_stays_home(lab.vault, PATH_PAYLOADS[name], done, jar)


def test_login_next_control_keeps_local_paths(lab, next_jar):
    """Control: a legitimate local `next` survives the sign-in, so the refusals above are not blanket."""
    _, done = sign_in(lab.vault, "alice", "/login?next=" + up.quote("/healthz?x=1", safe=""), jar=next_jar)
    assert done.status_code == 303 and done.headers["location"] == "/healthz?x=1", done.headers


# ---------------------------------------------------------------------------------------------------------------
# 4. Cross-user isolation, randomized
# ---------------------------------------------------------------------------------------------------------------

async def isolation_pass(lab: Lab, provider: Provider, transport: str, user: str) -> tuple[int, list[str]]:
    """All checks for one user on one transport: (checks made, crossings found)."""
    open_session = lab.vault.http_session if transport == "streamable_http" else lab.vault.sse_session
    own = lab.grants[user]
    others = [(u, gid, acct) for u, gs in lab.grants.items() if u != user for gid, acct in gs]
    other_ids = {gid for _, gid, _ in others}
    checks, crossings = 0, []
    whoami = f"{provider.api}/whoami"
    async with open_session(lab.tokens[user]) as s:
        listed = (await s.call_tool("list_grants", {})).structured_content["grants"]
        checks += 1
        if sorted((g["id"], g["account"]) for g in listed) != own:
            crossings.append(f"{transport} {user}: list_grants = {[(g['id'], g['account']) for g in listed]}, own = {own}")
        for gid, acct in own:  # positive control: the user's own grants work by id and by account
            for args in ({"grant_id": gid}, {"provider": "testapi", "account": acct}):
                out = (await s.call_tool("vault_request", {"method": "GET", "url": whoami, **args})).structured_content
                assert out.get("status") == 200, (SEED, transport, user, args, out)
        for other, gid, acct in others:
            r = await s.call_tool("vault_request", {"method": "GET", "url": whoami, "grant_id": gid})
            out = r.structured_content or {}
            checks += 1
            if not (r.is_error and out.get("error") == "grant_not_found") or "status" in out:
                crossings.append(f"{transport} {user} → {other}'s grant id {gid}: {out}")
            r = await s.call_tool("vault_request", {"method": "GET", "url": whoami, "provider": "testapi", "account": acct})
            out = r.structured_content or {}
            checks += 1
            leaked = {i for i in other_ids if i in json.dumps(out)}
            if "status" in out or leaked or out.get("error") in (None, "ambiguous_grant"):
                crossings.append(f"{transport} {user} → {other}'s account {acct}: {out}")
    return checks, crossings


def test_cross_user_isolation_randomized(provider, lab):
    checks, crossings = 0, []
    order = list(ISOLATION_USERS)
    lab.rng.shuffle(order)
    for transport in ("streamable_http", "legacy_sse"):
        for user in order:
            n, found = asyncio.run(isolation_pass(lab, provider, transport, user))
            checks += n
            crossings += found
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ISOLATION_ARTIFACT.write_text(json.dumps({
        "seed": SEED, "users": len(ISOLATION_USERS), "transports": ["streamable_http", "legacy_sse"],
        "grants": sum(len(g) for g in lab.grants.values()),
        "grants_per_user": {u: len(g) for u, g in lab.grants.items()},
        "checks": checks, "crossings": len(crossings), "crossing_details": crossings,
    }, indent=2) + "\n")
    assert checks > 0 and not crossings, f"seed {SEED}: {crossings}"
