// The real azure-devops-node-api, pointed at the gateway with a gateway key as its PAT.
//
//   GATEWAY_URL=http://127.0.0.1:PORT GATEWAY_KEY=azgw_... node sdk.js
//
// Prints one JSON object: what the SDK got, and every request it sent (`sent`). Any
// request to another origin than the gateway's fails at once, as an unreachable host
// would, and is listed under `escaped`: a URL the gateway forgot to rewrite shows up there.
"use strict";

const http = require("http");
const https = require("https");

const gateway = new URL(process.env.GATEWAY_URL);
const sent = [];
const escaped = [];

for (const mod of [http, https]) {
  const real = mod.request;
  mod.request = function (options, ...rest) {
    const scheme = mod === https ? "https:" : "http:";
    const host = options.hostname || options.host;
    const port = String(options.port || (scheme === "https:" ? 443 : 80));
    const url = `${scheme}//${host}:${port}${options.path || "/"}`;
    sent.push(`${options.method || "GET"} ${url}`);
    if (scheme !== gateway.protocol || host !== gateway.hostname || port !== gateway.port) {
      escaped.push(url);
      const err = new Error(`connect ECONNREFUSED ${host}:${port} (not the gateway)`);
      err.code = "ECONNREFUSED";
      throw err;
    }
    return real.call(this, options, ...rest);
  };
}

const azdev = require("azure-devops-node-api");

async function outcome(call) {
  try {
    return { ok: await call() };
  } catch (err) {
    return { error: String(err.message || err), statusCode: err.statusCode || null };
  }
}

async function main() {
  const handler = azdev.getPersonalAccessTokenHandler(process.env.GATEWAY_KEY);
  const conn = new azdev.WebApi(`${gateway.origin}/fabrikam`, handler);
  const out = {};
  const core = await conn.getCoreApi();
  out.projects = await outcome(async () => (await core.getProjects()).map((p) => p.name));
  const git = await conn.getGitApi();
  out.repos = (await git.getRepositories("Fabrikam-Fiber")).map((r) => [r.name, r.url]);
  // the organization-wide form of the same operation: the SDK leaves `project` out
  out.orgRepos = await outcome(async () =>
    (await git.getRepositories()).map((r) => r.name).sort(),
  );
  const release = await conn.getReleaseApi(); // its host, from resourceAreas
  out.releaseApiUrl = release.baseUrl || null;
  out.releases = (await release.getReleases("Fabrikam-Fiber")).map((r) => [r.name, r.url]);
  out.sent = sent;
  out.escaped = escaped;
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((err) => {
  process.stdout.write(
    JSON.stringify({ fatal: String((err && err.stack) || err), sent, escaped }) + "\n",
  );
  process.exit(1);
});
