// The peer that bench/run measures beside tokensmith: node-oidc-provider (pinned in
// package.json) issuing RS256-signed JWT access tokens on the client_credentials grant, with the
// client authenticating by client_secret_basic and the resource server chosen by a resource
// indicator (RFC 8707) whose accessTokenFormat is "jwt". Every token costs one RSA-2048
// signature, as a tokensmith ID token does.
//
//   node server.mjs --port 8090 [--workers 2]
//
// Prints "ready <port>" once listening (from every worker). Listens on 127.0.0.1 only.
import cluster from 'node:cluster';
import crypto from 'node:crypto';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '8090' },
    workers: { type: 'string', default: '1' },
  },
});
const port = Number(values.port);
const workers = Number(values.workers);

export const CLIENT_ID = 'bench-client';
export const CLIENT_SECRET = 'bench-client-secret';
export const RESOURCE = 'https://api.bench.example/';
export const SCOPE = 'api:read';

function jwks() {
  // One signing key for the whole cluster, passed to the workers through the environment.
  if (process.env.BENCH_PEER_JWK) return { keys: [JSON.parse(process.env.BENCH_PEER_JWK)] };
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'bench-1', alg: 'RS256', use: 'sig' };
  process.env.BENCH_PEER_JWK = JSON.stringify(jwk);
  return { keys: [jwk] };
}

function serve() {
  const provider = new Provider(`http://127.0.0.1:${port}`, {
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: jwks(),
    scopes: [SCOPE],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: SCOPE,
          audience: RESOURCE,
          accessTokenTTL: 3600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
  });
  const server = provider.listen(port, '127.0.0.1', () => {
    process.stdout.write(`ready ${port}\n`);
  });
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
}

if (workers > 1 && cluster.isPrimary) {
  jwks();
  for (let i = 0; i < workers; i += 1) cluster.fork({ BENCH_PEER_JWK: process.env.BENCH_PEER_JWK });
  process.on('SIGTERM', () => {
    let alive = Object.keys(cluster.workers).length;
    cluster.on('exit', () => {
      alive -= 1;
      if (alive === 0) process.exit(0);
    });
    for (const worker of Object.values(cluster.workers)) worker.kill('SIGTERM');
  });
} else {
  serve();
}
