// An OpenID Connect provider for the gateway's end-to-end tests: the `oidc-provider` package
// (OpenID Certified) on 127.0.0.1, with a login step that a test drives with plain HTTP (no
// browser, no consent page) and a few test-only endpoints under /test/.
//
// Environment: OIDC_PORT (required), OIDC_ACCESS_TOKEN_TTL (seconds, default 3600). The
// provider exits when its standard input closes (the test process ended).
//
// Test endpoints:
//   POST /test/clients  JSON client metadata: registers (or replaces) a client, so each test
//                       can name its own redirect URIs on the gateway's free port. The
//                       extra field `access_token_ttl` (seconds) overrides the TTL for it.
//   GET  /test/grants?client_id=ID  JSON counts of successful token grants of that client,
//                       by grant type: {"authorization_code": 1, "refresh_token": 2, ...}.
//   GET  /test/backchannel?client_id=ID  JSON count of back-channel logout deliveries.
//   POST /test/end-session?sub=SUB  ends every provider session of that user and sends the
//                       back-channel logout tokens their clients are registered for.
//
// Login: GET /interaction/UID answers a form; POST /interaction/UID with `login=NAME` logs
// NAME in and grants what the client asked for.

import http from 'node:http';
import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;
const defaultTtl = Number(process.env.OIDC_ACCESS_TOKEN_TTL || 3600);
const ttlOf = new Map();
const grants = new Map();
const backchannel = new Map();

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'gateway',
    client_secret: 'gateway-secret-for-tests-only',
    redirect_uris: ['http://127.0.0.1:8080/oidc/callback'],
    post_logout_redirect_uris: ['http://127.0.0.1:8080/'],
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
  }],
  extraClientMetadata: { properties: ['access_token_ttl'] },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      // No confirmation page: the logout form submits itself.
      logoutSource: async (ctx, form) => {
        ctx.body = `<!DOCTYPE html><html><body>${form}`
          + '<script>document.forms[0].submit()</script></body></html>';
      },
    },
  },
  claims: { openid: ['sub'], email: ['email'], profile: ['name'] },
  // Scope claims in the ID token itself, not only at the userinfo endpoint.
  conformIdTokenClaims: false,
  findAccount: async (_ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub, email: `${sub}@example.test`, name: `User ${sub}` }),
  }),
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  ttl: {
    AccessToken: (_ctx, _token, client) => ttlOf.get(client.clientId) ?? defaultTtl,
    ClientCredentials: (_ctx, _token, client) => ttlOf.get(client.clientId) ?? defaultTtl,
    IdToken: 3600,
    RefreshToken: 24 * 3600,
    Session: 24 * 3600,
    Grant: 24 * 3600,
    Interaction: 600,
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: ['ferrogate-test-cookie-key'] },
  // The gateways under test listen on loopback, which the provider's outgoing requests
  // (back-channel logout) refuse by default as special-use addresses.
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
});
provider.proxy = false;

provider.on('grant.success', (ctx) => {
  const id = ctx.oidc.client?.clientId;
  const type = ctx.oidc.params?.grant_type;
  if (!id || !type) return;
  const counts = grants.get(id) ?? {};
  counts[type] = (counts[type] ?? 0) + 1;
  grants.set(id, counts);
});
function delivered(client) {
  backchannel.set(client.clientId, (backchannel.get(client.clientId) ?? 0) + 1);
}
provider.on('backchannel.success', (_ctx, client) => delivered(client));
provider.on('backchannel.error', (_ctx, err, client) => {
  console.error(`backchannel logout to ${client.clientId} failed: ${err}`);
});

function readBody(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.setEncoding('utf8');
    req.on('data', (c) => { data += c; });
    req.on('end', () => resolve(data));
    req.on('error', reject);
  });
}

function json(res, status, value) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(value));
}

async function registerClient(req, res) {
  const metadata = JSON.parse(await readBody(req));
  if (metadata.access_token_ttl) ttlOf.set(metadata.client_id, Number(metadata.access_token_ttl));
  delete metadata.access_token_ttl;
  await provider.Client.adapter.upsert(metadata.client_id, metadata);
  // Built now, so bad metadata fails the registration rather than the first login.
  const client = await provider.Client.find(metadata.client_id);
  if (!client) throw new Error('client not stored');
  json(res, 201, { client_id: metadata.client_id });
}

async function endSessions(url, res) {
  const sub = url.searchParams.get('sub');
  let ended = 0;
  for (const session of sessions.get(sub) ?? []) {
    const stored = await provider.Session.findByUid(session);
    if (!stored) continue;
    for (const clientId of Object.keys(stored.authorizations ?? {})) {
      const client = await provider.Client.find(clientId);
      const sid = stored.authorizations[clientId].sid;
      if (client?.backchannelLogoutUri) {
        await client.backchannelLogout(sub, sid);
        delivered(client);
      }
    }
    await stored.destroy();
    ended += 1;
  }
  sessions.delete(sub);
  json(res, 200, { ended });
}

// The provider sessions of each user, by session uid, for /test/end-session.
const sessions = new Map();

async function interaction(req, res, uid) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction uid mismatch');
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(`<!DOCTYPE html><form method="post" action="/interaction/${uid}">`
      + '<input name="login"><button>Sign in</button></form>');
    return;
  }
  const form = new URLSearchParams(await readBody(req));
  const accountId = form.get('login');
  if (!accountId) {
    res.writeHead(400);
    res.end('login required');
    return;
  }
  const { params } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  grant.addOIDCScope(String(params.scope ?? 'openid'));
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, {
    login: { accountId },
    consent: { grantId },
  }, { mergeWithLastSubmission: false });
}

// Provider session uids are learnt when a login completes (the interaction holds none yet).
provider.on('authorization.success', async (ctx) => {
  const session = ctx.oidc.session;
  if (session?.accountId) {
    const known = sessions.get(session.accountId) ?? new Set();
    known.add(session.uid);
    sessions.set(session.accountId, known);
  }
});

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  try {
    const match = url.pathname.match(/^\/interaction\/([^/]+)$/);
    if (match) {
      await interaction(req, res, match[1]);
    } else if (url.pathname === '/test/clients' && req.method === 'POST') {
      await registerClient(req, res);
    } else if (url.pathname === '/test/grants') {
      json(res, 200, grants.get(url.searchParams.get('client_id')) ?? {});
    } else if (url.pathname === '/test/backchannel') {
      json(res, 200, { delivered: backchannel.get(url.searchParams.get('client_id')) ?? 0 });
    } else if (url.pathname === '/test/end-session' && req.method === 'POST') {
      await endSessions(url, res);
    } else {
      callback(req, res);
    }
  } catch (err) {
    console.error(err);
    if (!res.headersSent) {
      res.writeHead(500, { 'content-type': 'text/plain' });
    }
    res.end(String(err));
  }
});
// The test process holds our stdin: when it ends, so does the provider.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
server.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
