// Drives google-auth-library's Impersonated client against a tokensmith server.
//
// Reads one JSON object on stdin:
//   {url, owner: {client_id, client_secret, refresh_token}, target, delegates, scopes,
//    lifetime, audience, wrongAudience, blob (base64)}
// and prints one JSON object on stdout with a result per step: {ok: value} or
// {error: {message, status, code}}, so that one failing step does not hide the others.
//
// Nothing here may reach Google: the source client refreshes at <url>/token
// (endpoints.oauth2TokenUrl), Impersonated calls <url>/v1/... (endpoint), verifyIdToken fetches
// <url>/oauth2/v1/certs and getTokenInfo posts to <url>/tokeninfo.
import { Impersonated, OAuth2Client, UserRefreshClient } from 'google-auth-library';

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

function describe(error) {
  const body = error?.response?.data?.error;
  return {
    message: String(error?.message ?? error),
    code: error?.response?.status ?? null,
    status: typeof body === 'object' && body !== null ? (body.status ?? null) : null,
  };
}

async function step(fn) {
  try {
    return { ok: await fn() };
  } catch (error) {
    return { error: describe(error) };
  }
}

// A token whose header and payload come from one JWT and the signature from another.
function spliced(headerAndPayloadFrom, signatureFrom) {
  const [header, payload] = headerAndPayloadFrom.split('.');
  return `${header}.${payload}.${signatureFrom.split('.')[2]}`;
}

const config = await readStdin();
const { url } = config;

const source = new UserRefreshClient({
  clientId: config.owner.client_id,
  clientSecret: config.owner.client_secret,
  refreshToken: config.owner.refresh_token,
  endpoints: { oauth2TokenUrl: `${url}/token` },
});
const impersonated = new Impersonated({
  sourceClient: source,
  targetPrincipal: config.target,
  targetScopes: config.scopes,
  delegates: config.delegates,
  lifetime: config.lifetime,
  endpoint: url,
});
const verifier = new OAuth2Client({
  endpoints: {
    oauth2FederatedSignonPemCertsUrl: `${url}/oauth2/v1/certs`,
    tokenInfoUrl: `${url}/tokeninfo`,
  },
});

const result = { startedAt: Date.now() };

result.accessToken = await step(async () => {
  const { token } = await impersonated.getAccessToken();
  return { token, expiryDate: impersonated.credentials.expiry_date };
});
result.tokenInfo = await step(() =>
  verifier.getTokenInfo(result.accessToken.ok?.token ?? 'no-access-token'),
);
result.idToken = await step(() =>
  impersonated.fetchIdToken(config.audience, { includeEmail: true }),
);
result.idTokenWithoutEmail = await step(() =>
  impersonated.fetchIdToken(config.audience, { includeEmail: false }),
);
const idToken = result.idToken.ok ?? 'no-id-token';
result.verified = await step(async () => {
  const ticket = await verifier.verifyIdToken({ idToken, audience: config.audience });
  return ticket.getPayload();
});
result.verifiedWithoutEmail = await step(async () => {
  const ticket = await verifier.verifyIdToken({
    idToken: result.idTokenWithoutEmail.ok ?? 'no-id-token',
    audience: config.audience,
  });
  return ticket.getPayload();
});
result.verifiedWrongAudience = await step(async () => {
  const ticket = await verifier.verifyIdToken({ idToken, audience: config.wrongAudience });
  return ticket.getPayload();
});
result.verifiedSpliced = await step(async () => {
  const forged = spliced(result.idTokenWithoutEmail.ok ?? idToken, idToken);
  const ticket = await verifier.verifyIdToken({ idToken: forged, audience: config.audience });
  return ticket.getPayload();
});
result.signBlob = await step(() => impersonated.sign(Buffer.from(config.blob, 'base64')));

process.stdout.write(JSON.stringify(result) + '\n');
