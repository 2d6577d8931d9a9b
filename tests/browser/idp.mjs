// A real OpenID Provider for the tests of bearer JWTs (tests/it/auth.rs):
// oidc-provider (a certified implementation), with one client-credentials
// client per role and RS256-signed JWT access tokens for the resource
// https://orders.order-saga.test. Prints `ready <issuer>` once it listens.
//
//   PORT=4000 node tests/browser/idp.mjs
import { generateKeyPairSync } from "node:crypto";
import Provider from "oidc-provider";

const port = Number(process.env.PORT || 4000);
const issuer = `http://127.0.0.1:${port}`;
const audience = "https://orders.order-saga.test";
const scopes = "orders:read orders:write orders:status ops:read ops:act ops:admin";

const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: "jwk" }), kid: "op-rs256-1", use: "sig", alg: "RS256" };

const client = (id, scope) => ({
  client_id: id,
  client_secret: `${id}-secret`,
  grant_types: ["client_credentials"],
  redirect_uris: [],
  response_types: [],
  scope,
});

const provider = new Provider(issuer, {
  clients: [
    client("checkout-service", "orders:read orders:write"),
    client("support-tool", "orders:read orders:status"),
    client("l1-dashboard", "ops:read"),
  ],
  jwks: { keys: [jwk] },
  scopes: scopes.split(" "),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resource) => {
        if (resource !== audience) throw new Error(`unknown resource ${resource}`);
        return { scope: scopes, audience, accessTokenFormat: "jwt", jwt: { sign: { alg: "RS256" } } };
      },
    },
  },
});

provider.listen(port, "127.0.0.1", () => {
  console.log(`ready ${issuer}`);
});
