// A real OAuth 2.0 / OpenID provider (npm oidc-provider, by panva) for the vault-mcp end-to-end tests.
// It plays two roles on one issuer:
//  * the third-party provider vault-mcp connects to (clients vault-provider*, scopes repo read:user calendar.read),
//    issuing tokens for the resource API (API_RESOURCE), opaque by default (the API introspects them);
//  * the end users' identity provider: any other loopback resource indicator gets an RFC 9068 JWT.
// Login and consent are small pages that a browser (or a form-filling client) drives; AUTO_APPROVE=1 skips them.
// GET /__stats returns how many token requests of each grant type succeeded/failed (tests count refreshes with it).
// Env: OIDC_PORT API_RESOURCE MCP_RESOURCE ACCESS_TOKEN_TTL REFRESH_TOKEN_TTL AUTO_APPROVE STATE_DIR
//      REDIRECT_URIS (extra exact redirect URIs, comma separated)
//      USER_GROUPS (JSON {"user": ["group", ...]}, replaces the default groups below)
//      GROUPS_CLAIM (name of the groups claim, default `groups`; a dotted path such as `realm_access.roles` nests it)
//      GROUPS_FORMAT (`array`, the default, or `string`: one space-separated string)
//
// Groups (the end-user IdP role): every JWT access token issued to a user for an MCP resource (any loopback
// resource but API_RESOURCE) carries the user's current groups in GROUPS_CLAIM; default alice: eng, data-team;
// bob: eng. They are read when the token is issued, so after a change the user's next token shows it (tokens
// already issued keep what they said). Tokens for API_RESOURCE and client-credentials tokens carry no groups.
//   GET  /__admin/groups                                   -> {"alice": ["eng", "data-team"], "bob": ["eng"], ...}
//   POST /__admin/groups {"user": "bob", "groups": []}     -> 200 {"user", "groups"}; 404 for an unknown user
//   POST /__admin/users  {"user": "carol", "groups": [..]} -> 200: adds a user (password `password`) or replaces
//                                                             an existing user's groups
// Everything set through /__admin lives in memory: a restart goes back to the defaults.
//
// Client credentials: `mcp-service` / `mcp-service-secret` (as before) and `ci-agent` / `ci-agent-secret`, an
// agent's own OAuth client. With `resource=<MCP URL>` and `scope=mcp:tools` the latter gets an RFC 9068 JWT
// (typ at+jwt) with claims iss, sub = "ci-agent" (oidc-provider sets sub to the client id when there is no
// end user), client_id = "ci-agent", aud = the resource, scope = "mcp:tools", jti, iat, exp; no groups.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import Provider, { errors } from 'oidc-provider';
import { generateKeyPair, exportJWK } from 'jose';

const env = process.env;
const PORT = Number(env.OIDC_PORT || 9000);
const ISSUER = `http://127.0.0.1:${PORT}`;
const API_RESOURCE = env.API_RESOURCE || 'http://127.0.0.1:9100/';
const MCP_RESOURCE = env.MCP_RESOURCE || 'http://127.0.0.1:8080/mcp';
const AT_TTL = Number(env.ACCESS_TOKEN_TTL || 60);
const RT_TTL = Number(env.REFRESH_TOKEN_TTL || 86400);
const AUTO = env.AUTO_APPROVE === '1';
const API_SCOPES = 'repo read:user calendar.read';
const MCP_SCOPES = env.MCP_SCOPES || 'mcp:tools mcp:admin';
const STATE_DIR = env.STATE_DIR || '/tmp/vault-mcp-e2e-oidc';

const USERS = {
  alice: { email: 'alice@example.test', name: 'Alice Example', groups: ['eng', 'data-team'] },
  bob: { email: 'bob@example.test', name: 'Bob Example', groups: ['eng'] },
};
for (const [u, g] of Object.entries(JSON.parse(env.USER_GROUPS || '{}'))) {
  USERS[u] ||= { email: `${u}@example.test`, name: u };
  USERS[u].groups = g;
}
const GROUPS_CLAIM = env.GROUPS_CLAIM || 'groups';
const GROUPS_FORMAT = env.GROUPS_FORMAT || 'array';
/** The groups claim for a user, nested along GROUPS_CLAIM's dotted path. */
const groupsClaim = (user) => {
  const groups = [...(USERS[user].groups || [])];
  const path = GROUPS_CLAIM.split('.');
  let value = GROUPS_FORMAT === 'string' ? groups.join(' ') : groups;
  for (const k of path.reverse()) value = { [k]: value };
  return value;
};

async function loadKeys() {
  const f = path.join(STATE_DIR, 'jwks.private.json');
  if (fs.existsSync(f)) return JSON.parse(fs.readFileSync(f, 'utf8'));
  const mk = async (alg, opts) => {
    const { privateKey } = await generateKeyPair(alg, { extractable: true, ...opts });
    return { ...(await exportJWK(privateKey)), alg, use: 'sig', kid: `${alg.toLowerCase()}-${Date.now()}` };
  };
  const jwks = { keys: [await mk('RS256', { modulusLength: 2048 }), await mk('ES256')] };
  fs.mkdirSync(STATE_DIR, { recursive: true });
  fs.writeFileSync(f, JSON.stringify(jwks), { mode: 0o600 });
  return jwks;
}

const loopback = ['http://127.0.0.1/oauth/callback', 'http://127.0.0.1/callback', 'http://localhost/oauth/callback', 'http://localhost/callback'];
const extra = (env.REDIRECT_URIS || '').split(',').filter(Boolean);
const providerClient = (id, auth) => ({
  client_id: id, client_secret: `${id}-secret`, token_endpoint_auth_method: auth, application_type: 'native',
  redirect_uris: [...loopback, ...extra],
  grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'], response_types: ['code'],
});
const clients = [
  providerClient('vault-provider', 'client_secret_basic'),
  providerClient('vault-provider-post', 'client_secret_post'),
  { ...providerClient('mcp-user', 'none'), client_secret: undefined },
  { client_id: 'mcp-service', client_secret: 'mcp-service-secret', grant_types: ['client_credentials'], response_types: [], redirect_uris: [] },
  { client_id: 'ci-agent', client_secret: 'ci-agent-secret', grant_types: ['client_credentials'], response_types: [], redirect_uris: [] },
  { client_id: 'resource-api', client_secret: 'resource-api-secret', grant_types: [], response_types: [], redirect_uris: [] },
];

const isLoopbackResource = (r) => /^https?:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(\/|$)/.test(r);
const stats = {};
const bump = (key) => { stats[key] = (stats[key] || 0) + 1; };

const provider = new Provider(ISSUER, {
  clients,
  jwks: await loadKeys(),
  cookies: { keys: ['e2e-cookie-key'] },
  responseTypes: ['code'],
  scopes: ['openid', 'offline_access', ...API_SCOPES.split(' '), ...MCP_SCOPES.split(' ')],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username'] },
  pkce: { required: () => true },
  rotateRefreshToken: () => true,
  issueRefreshToken: async (ctx, client, code) => client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
  ttl: { AccessToken: AT_TTL, ClientCredentials: AT_TTL, RefreshToken: RT_TTL, AuthorizationCode: 60, DeviceCode: 600,
    IdToken: 3600, Interaction: 600, Session: 86400, Grant: 86400 * 14 },
  findAccount: async (ctx, sub) => USERS[sub] && ({
    accountId: sub,
    claims: async () => ({ sub, email: USERS[sub].email, email_verified: true, name: USERS[sub].name, preferred_username: sub }),
  }),
  extraTokenClaims: async (ctx, token) => (token.accountId && USERS[token.accountId]
    ? { email: USERS[token.accountId].email, preferred_username: token.accountId,
      ...(token.resourceServer && token.resourceServer.audience !== API_RESOURCE ? groupsClaim(token.accountId) : {}) }
    : undefined),
  features: {
    devInteractions: { enabled: false },
    introspection: { enabled: true, allowedPolicy: async (ctx, client) => client.clientAuthMethod !== 'none' },
    revocation: { enabled: true },
    clientCredentials: { enabled: true },
    deviceFlow: { enabled: true },
    registration: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => {
        if (oneOf) return oneOf[0];
        if (!client?.clientId?.startsWith('vault-provider')) return MCP_RESOURCE;
        const asked = String(ctx.oidc.params?.scope || '').split(' ');
        return asked.some((s) => API_SCOPES.split(' ').includes(s)) ? API_RESOURCE : undefined;
      },
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resource) => {
        if (resource === API_RESOURCE) {
          return { scope: API_SCOPES, audience: API_RESOURCE, accessTokenTTL: AT_TTL, accessTokenFormat: env.API_TOKEN_FORMAT || 'opaque' };
        }
        if (isLoopbackResource(resource)) {
          return { scope: MCP_SCOPES, audience: resource, accessTokenTTL: AT_TTL, accessTokenFormat: 'jwt', jwt: { sign: { alg: env.JWT_ALG || 'RS256' } } };
        }
        throw new errors.InvalidTarget();
      },
    },
  },
});
provider.on('grant.success', (ctx) => bump(`${ctx.oidc.params.grant_type}:ok`));
provider.on('grant.error', (ctx, err) => { bump(`${ctx.oidc.params?.grant_type}:error`); console.error('grant.error', err.message); });
provider.on('server_error', (ctx, err) => console.error('server_error', err));

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!doctype html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head><body><h1>${esc(title)}</h1>${body}</body></html>`;
const readForm = (req) => new Promise((ok) => { let b = ''; req.on('data', (c) => { b += c; }); req.on('end', () => ok(Object.fromEntries(new URLSearchParams(b)))); });

async function consentAll(details) {
  const { prompt: { details: d }, params, session, grantId } = details;
  const grant = grantId ? await provider.Grant.find(grantId) : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
  if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
  for (const [ind, sc] of Object.entries(d.missingResourceScopes || {})) grant.addResourceScope(ind, sc.join(' '));
  return { consent: { grantId: await grant.save() } };
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params } = details;
  const finish = (result) => provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  const deny = () => finish({ error: 'access_denied', error_description: 'End-User denied the request' });
  if (AUTO && !action) {
    if (params.login_hint === 'deny') return deny();
    if (prompt.name === 'login') return finish({ login: { accountId: USERS[params.login_hint] ? params.login_hint : 'alice' } });
    return finish(await consentAll(details));
  }
  if (action === 'abort') return deny();
  if (action === 'login') {
    const f = await readForm(req);
    if (USERS[f.username] && f.password === 'password') return finish({ login: { accountId: f.username } });
  }
  if (action === 'confirm') return finish(await consentAll(details));
  res.setHeader('content-type', 'text/html; charset=utf-8');
  if (prompt.name === 'login') {
    return res.end(page('Sign in', `<form method="post" action="/interaction/${uid}/login">
<input id="username" name="username" value="${esc(params.login_hint || '')}"><input id="password" name="password" type="password">
<button id="submit" type="submit">Sign in</button></form><form method="post" action="/interaction/${uid}/abort"><button id="cancel">Cancel</button></form>`));
  }
  const d = prompt.details;
  const scopes = [...(d.missingOIDCScope || []), ...Object.values(d.missingResourceScopes || {}).flat()];
  return res.end(page('Authorize access', `<p>Client <b id="client">${esc(params.client_id)}</b> for <b id="account">${esc(details.session.accountId)}</b>:</p>
<ul id="scopes">${scopes.map((s) => `<li>${esc(s)}</li>`).join('')}</ul>
<form method="post" action="/interaction/${uid}/confirm"><button id="allow" type="submit">Allow</button></form>
<form method="post" action="/interaction/${uid}/abort"><button id="deny" type="submit">Deny</button></form>`));
}

// Test controls for group membership (see the header). Loopback only, like the whole server.
async function admin(req, res) {
  const reply = (status, body) => { res.statusCode = status; res.setHeader('content-type', 'application/json'); res.end(JSON.stringify(body)); };
  const path = req.url.split('?')[0];
  if (req.method === 'GET' && path === '/__admin/groups') {
    return reply(200, Object.fromEntries(Object.entries(USERS).map(([u, v]) => [u, v.groups || []])));
  }
  if (req.method !== 'POST' || !['/__admin/groups', '/__admin/users'].includes(path)) return reply(404, { error: 'not_found' });
  let body;
  try {
    body = JSON.parse(await new Promise((ok) => { let b = ''; req.on('data', (c) => { b += c; }); req.on('end', () => ok(b)); }));
  } catch { return reply(400, { error: 'invalid_json' }); }
  const { user, groups } = body || {};
  if (typeof user !== 'string' || !/^[\w.-]{1,64}$/.test(user) || !Array.isArray(groups) || !groups.every((g) => typeof g === 'string')) {
    return reply(400, { error: 'invalid_request', error_description: 'give {"user": "name", "groups": ["group", ...]}' });
  }
  if (path === '/__admin/groups' && !USERS[user]) return reply(404, { error: 'unknown_user', error_description: `no user ${user}` });
  USERS[user] ||= { email: `${user}@example.test`, name: user };
  USERS[user].groups = groups;
  console.log(`admin: ${user} groups = ${JSON.stringify(groups)}`);
  return reply(200, { user, groups });
}

const oidc = provider.callback();
http.createServer(async (req, res) => {
  if (req.url === '/__stats') { res.setHeader('content-type', 'application/json'); return res.end(JSON.stringify(stats)); }
  if (req.url.startsWith('/__admin/')) return admin(req, res);
  // oidc-provider keeps offline_access only with prompt=consent (OIDC Core 11); generic OAuth clients do not send it.
  if (req.method === 'GET' && req.url.startsWith('/auth?')) {
    const u = new URL(req.url, ISSUER);
    if (u.searchParams.get('scope')?.split(' ').includes('offline_access') && !u.searchParams.has('prompt')) {
      u.searchParams.set('prompt', 'consent'); req.url = u.pathname + u.search;
    }
  }
  const m = req.url.match(/^\/interaction\/([\w-]+)(?:\/(login|confirm|abort))?\/?(?:\?.*)?$/);
  if (!m) return oidc(req, res);
  try { await interaction(req, res, m[1], m[2]); } catch (e) {
    console.error('interaction error', e); res.statusCode = 400; res.end(page('Error', `<p id="error">${esc(e.message)}</p>`));
  }
}).listen(PORT, '127.0.0.1', () => console.log(`oidc-provider ${ISSUER} api_resource=${API_RESOURCE} at_ttl=${AT_TTL}s auto=${AUTO}`));
