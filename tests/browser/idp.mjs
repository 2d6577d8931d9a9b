// A real OpenID Provider for the tests of bearer JWTs (tests/it/auth.rs) and
// of the console's sign-in (tests/it/console.rs, tests/browser/oidc.mjs):
// oidc-provider (a certified implementation), with one client-credentials
// client per role and RS256-signed JWT access tokens for the resource
// https://orders.order-saga.test. With CONSOLE_REDIRECT set it also has the
// console's client (`ops-console`, authorization code, PKCE, client secret)
// and its development login page, where any password signs in these
// accounts: sre-lead (ops:admin), alice (ops:act), viewer (ops:read),
// mallory (no ops role). Prints `ready <issuer>` once it listens.
//
//   PORT=4000 [CONSOLE_REDIRECT=http://localhost:8080/ops/ui/callback] node tests/browser/idp.mjs
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

const consoleRedirect = process.env.CONSOLE_REDIRECT;
const roles = { "sre-lead": ["ops:admin"], alice: ["ops:act", "ops:read"], viewer: ["ops:read"], mallory: [] };

const provider = new Provider(issuer, {
  clients: [
    client("checkout-service", "orders:read orders:write"),
    client("support-tool", "orders:read orders:status"),
    client("l1-dashboard", "ops:read"),
    ...(consoleRedirect
      ? [{
          client_id: "ops-console",
          client_secret: "ops-console-secret",
          grant_types: ["authorization_code"],
          response_types: ["code"],
          redirect_uris: [consoleRedirect],
          token_endpoint_auth_method: "client_secret_basic",
          scope: "openid profile roles",
        }]
      : []),
  ],
  jwks: { keys: [jwk] },
  scopes: ["openid", "profile", "roles", ...scopes.split(" ")],
  claims: { openid: ["sub"], profile: ["preferred_username", "name"], roles: ["roles"] },
  // The ID token carries the claims its scopes grant (as most providers can
  // be configured to), not only the userinfo endpoint.
  conformIdTokenClaims: false,
  findAccount: (_ctx, id) => ({
    accountId: id,
    claims: () => ({ sub: id, preferred_username: id, name: `${id} (test account)`, roles: roles[id] ?? [] }),
  }),
  features: {
    devInteractions: { enabled: Boolean(consoleRedirect) },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (_ctx, client) => (client?.clientId === "ops-console" ? undefined : audience),
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
