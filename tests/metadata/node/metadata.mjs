// Node google-auth-library, unmodified, on the metadata path: the environment alone
// (GCE_METADATA_HOST / GCE_METADATA_IP) points it at tokensmith's metadata server.
// Usage: node metadata.mjs AUDIENCE  → prints one JSON line with what the client got.
import { GoogleAuth } from 'google-auth-library';

const audience = process.argv[2];
const auth = new GoogleAuth();
const out = {};
try {
  const client = await auth.getClient();
  out.clientType = client.constructor.name;
  out.projectId = await auth.getProjectId();
  out.accessToken = await auth.getAccessToken();
  if (audience) {
    const idClient = await auth.getIdTokenClient(audience);
    const headers = await idClient.getRequestHeaders();
    const value = typeof headers.get === 'function' ? headers.get('authorization') : headers.Authorization;
    out.idToken = String(value).replace(/^Bearer /, '');
  }
} catch (err) {
  out.error = String(err && err.stack ? err.stack : err);
}
console.log(JSON.stringify(out));
