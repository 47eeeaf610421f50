// dstack-runner: the in-container agent. Adopts the job identity the server issued ahead of time,
// or else enrolls once with the bootstrap (join token, agent URL, CA pin); keeps its identity in
// its home, holds the runner link and runs the job it is sent.
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import { JobTerminationReason } from "@dstack/proto/api";
import { agentTransport, enroll, fetchPinnedCa, IdentityStore } from "@dstack/proto/link";
import { adoptIssuedIdentity, BOOTSTRAP_ENV, BootstrapError, readBootstrap, type Bootstrap } from "./bootstrap.js";
import { Runner } from "./runner.js";
import { RUNNER_VERSION } from "./version.js";

export const DEFAULT_HOME = "/dstack/task";

const HELP = `Usage: dstack-runner [--home DIR] [--version] [--help]

The dstack job agent that runs inside the job's container. It dials the server's agent port
over mutual TLS, receives the job, runs its commands, ships logs and state, and exits when the
job is over and its logs are acknowledged.

Options:
  --home DIR   Runner home: bootstrap.json, identity/, logs/ (spool), blobs/ (default ${DEFAULT_HOME})
  --version    Print the version and exit
  --help       Print this help and exit

Bootstrap (first start only; the identity in DIR/identity is reused afterwards):
  DIR/bootstrap.json   {"joinToken": "...", "agentUrl": "https://host:3001", "caCertificatePem": "-----BEGIN…"}
  or the environment   ${BOOTSTRAP_ENV.token}, ${BOOTSTRAP_ENV.url}, ${BOOTSTRAP_ENV.caSha256}
                       (optional ${BOOTSTRAP_ENV.serverName}: TLS name to check)
  A job identity issued by the server ("certificatePem" and "privateKeyPem" in bootstrap.json, or
  ${BOOTSTRAP_ENV.certificatePem} and ${BOOTSTRAP_ENV.privateKeyPem}) is checked against the CA
  and used as is: no enrollment, no join token needed.
`;

export interface ParsedArgs {
  home: string;
  version: boolean;
  help: boolean;
}

export function parseArgs(argv: readonly string[]): ParsedArgs {
  const out: ParsedArgs = { home: DEFAULT_HOME, version: false, help: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--version" || a === "-v") out.version = true;
    else if (a === "--help" || a === "-h") out.help = true;
    else if (a === "--home") {
      const v = argv[++i];
      if (!v) throw new BootstrapError("--home needs a directory");
      out.home = v;
    } else if (a.startsWith("--home=")) out.home = a.slice("--home=".length);
    else throw new BootstrapError(`unknown argument '${a}' (see --help)`);
  }
  out.home = resolve(out.home);
  return out;
}

const say = (m: string) => process.stderr.write(`${new Date().toISOString()} dstack-runner: ${m}\n`);

async function enrollWith(b: Bootstrap, identityDir: string): Promise<void> {
  say(`enrolling at ${b.agentUrl} (bootstrap from ${b.source})`);
  const id = await enroll({
    serverUrl: b.agentUrl,
    token: b.joinToken,
    caSha256: b.caSha256,
    kind: "runner",
    home: identityDir,
    servername: b.serverName,
    identity: { hostname: hostname(), agentVersion: RUNNER_VERSION },
  });
  say(`enrolled as job submission ${id.agentId}`);
}

export async function main(argv: readonly string[]): Promise<number> {
  let args: ParsedArgs;
  try {
    args = parseArgs(argv);
  } catch (e) {
    process.stderr.write(`dstack-runner: ${(e as Error).message}\n`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (args.version) {
    process.stdout.write(`dstack-runner ${RUNNER_VERSION}\n`);
    return 0;
  }
  const identityDir = join(args.home, "identity");
  const store = new IdentityStore(identityDir);
  try {
    if (!store.exists()) {
      const b = readBootstrap(args.home);
      if (!b) {
        say(`no identity in ${identityDir} and no bootstrap: write ${join(args.home, "bootstrap.json")} or set ${BOOTSTRAP_ENV.token}, ${BOOTSTRAP_ENV.url} and ${BOOTSTRAP_ENV.caSha256}`);
        return 2;
      }
      let adopted = false;
      if (b.identity) {
        try {
          const caPem = b.identity.caPem ?? (await fetchPinnedCa(b.agentUrl, b.caSha256, b.serverName));
          const id = adoptIssuedIdentity(b, caPem, store);
          say(`using the job identity issued by the server: job submission ${id.agentId} (bootstrap from ${b.source})`);
          adopted = true;
        } catch (e) {
          if (!b.joinToken) throw e;
          say(`cannot use the issued job identity (${e instanceof Error ? e.message : String(e)}); enrolling instead`);
        }
      }
      if (!adopted) await enrollWith(b, identityDir);
    }
  } catch (e) {
    say(`cannot enroll: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
  const identity = store.load();
  if (identity.kind !== "runner") {
    say(`the identity in ${identityDir} is a ${identity.kind}'s, not a runner's`);
    return 2;
  }
  const runner = new Runner({
    home: args.home,
    identityDir,
    jobSubmissionId: identity.agentId,
    connect: () => {
      const id = store.load(); // renewed certificates are picked up by the next connection
      const { transport, session } = agentTransport(id.serverUrl, { caPem: id.caPem, certPem: id.certPem, keyPem: id.keyPem, servername: id.servername });
      return { transport, close: () => session.abort() };
    },
  });
  // `docker stop` (or the shim) ends the container: stop the job, then finish as usual.
  for (const sig of ["SIGTERM", "SIGINT"] as const) {
    process.once(sig, () => {
      say(`${sig} received: stopping the job`);
      runner.stop(5_000, JobTerminationReason.TERMINATED_BY_SERVER, `runner received ${sig}`);
    });
  }
  return runner.run();
}
