// A real OpenID provider on loopback for the single sign-on tests: panva's oidc-provider with its
// development login and consent pages (any password; the login name is the e-mail address).
// Usage: node provider.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI
import Provider from 'oidc-provider';

const [port, clientId, clientSecret, redirectUri] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
// Group membership by login, for the groups-claim rules.
const GROUPS = { 'dana@elsewhere.example': ['pixazo-admins'] };

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    application_type: 'native', // a loopback http redirect, as in these tests
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'groups'] },
  conformIdTokenClaims: false, // the claims of the granted scopes go into the ID token itself
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  cookies: { keys: ['pixazo-test-cookie-key'] },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: id, email_verified: true, name: id, groups: GROUPS[id] ?? [] };
      },
    };
  },
});
provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
