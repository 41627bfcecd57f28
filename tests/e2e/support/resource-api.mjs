// A protected API playing a GitHub-like third-party provider for the vault-mcp end-to-end tests.
// Opaque tokens are introspected at the oidc-provider on every call (revocation is immediate); JWTs are verified
// against its JWKS. Routes: GET /user (read:user), GET /repos (repo), GET /calendar/events (calendar.read),
// GET /whoami (any token), ANY /echo (any token; echoes method, path, headers incl. authorization, body),
// GET /redirect?to=URL (any token; 302 to URL), GET /status/<code>, GET /slow?ms=N, GET /big?kb=N, GET /health.
// 401 + WWW-Authenticate error="invalid_token" for bad tokens; 403 + error="insufficient_scope", scope="<needed>".
import http from 'node:http';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const PORT = Number(process.env.API_PORT || 9100);
const ISSUER = process.env.OIDC_ISSUER || 'http://127.0.0.1:9000';
const AUDIENCE = process.env.API_RESOURCE || `http://127.0.0.1:${PORT}/`;
const JWKS = createRemoteJWKSet(new URL(`${ISSUER}/jwks`));
const REALM = 'e2e-api';
let calls = 0;

async function validate(token) {
  if (token.split('.').length === 3) return (await jwtVerify(token, JWKS, { issuer: ISSUER, audience: AUDIENCE, typ: 'at+jwt' })).payload;
  const r = await fetch(`${ISSUER}/token/introspection`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from('resource-api:resource-api-secret').toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token }),
  });
  const info = await r.json();
  if (!info.active) throw new Error('token is not active (unknown, expired or revoked)');
  if (![].concat(info.aud || []).includes(AUDIENCE)) throw new Error(`token audience is not ${AUDIENCE}`);
  return info;
}

const ROUTES = {
  '/user': ['read:user', (c) => ({ login: c.sub, id: c.sub === 'alice' ? 1 : 2, email: c.email, name: c.preferred_username })],
  '/repos': ['repo', (c) => [{ name: 'vault-demo', owner: c.sub, private: true }, { name: 'hello-world', owner: c.sub, private: false }]],
  '/calendar/events': ['calendar.read', (c) => ({ owner: c.sub, events: [{ title: 'Standup', start: '2026-01-05T09:00:00Z' }] })],
  '/whoami': [null, (c) => ({ sub: c.sub, scope: c.scope, client_id: c.client_id })],
  '/echo': [null, (c, req, body) => ({ method: req.method, path: req.url, headers: req.headers, body, sub: c.sub })],
};

const send = (res, code, obj, headers = {}) => { res.writeHead(code, { 'content-type': 'application/json', ...headers }); res.end(JSON.stringify(obj)); };

http.createServer(async (req, res) => {
  const url = new URL(req.url, `http://127.0.0.1:${PORT}`);
  let body = ''; for await (const c of req) body += c;
  calls += 1;
  if (url.pathname === '/health') return send(res, 200, { ok: true, calls });
  let m = url.pathname.match(/^\/status\/(\d{3})$/);
  if (m) return send(res, Number(m[1]), { status: Number(m[1]) }, m[1] === '429' ? { 'retry-after': '1' } : {});
  if (url.pathname === '/slow') { const ms = Number(url.searchParams.get('ms') || 1000); await new Promise((ok) => setTimeout(ok, ms)); return send(res, 200, { slept_ms: ms }); }
  if (url.pathname === '/big') { res.writeHead(200, { 'content-type': 'text/plain' }); return res.end('x'.repeat(1024 * Number(url.searchParams.get('kb') || 1))); }
  const auth = (req.headers.authorization || '').match(/^Bearer\s+(\S+)$/i);
  if (url.pathname === '/redirect') {
    if (!auth) return send(res, 401, { error: 'missing bearer token' }, { 'www-authenticate': `Bearer realm="${REALM}"` });
    return send(res, 302, { to: url.searchParams.get('to') }, { location: url.searchParams.get('to') });
  }
  const route = ROUTES[url.pathname];
  if (!route) return send(res, 404, { message: 'Not Found' });
  if (!auth) return send(res, 401, { error: 'missing bearer token' }, { 'www-authenticate': `Bearer realm="${REALM}"` });
  let claims;
  try { claims = await validate(auth[1]); } catch (e) {
    return send(res, 401, { error: 'invalid_token', error_description: e.message },
      { 'www-authenticate': `Bearer realm="${REALM}", error="invalid_token", error_description="${e.message.replace(/"/g, "'")}"` });
  }
  const [need, handler] = route;
  if (need && !String(claims.scope || '').split(' ').includes(need)) {
    return send(res, 403, { error: 'insufficient_scope', needed: need, granted: claims.scope || '' },
      { 'www-authenticate': `Bearer realm="${REALM}", error="insufficient_scope", scope="${need}"` });
  }
  return send(res, 200, handler(claims, req, body));
}).listen(PORT, '127.0.0.1', () => console.log(`resource API http://127.0.0.1:${PORT}/ issuer=${ISSUER}`));
