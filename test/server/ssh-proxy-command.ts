// What an OpenSSH `ProxyCommand` runs in the tunnel tests: `node --import tsx ssh-proxy-command.ts RUN`
// relays stdin/stdout through TunnelService.OpenRunTunnel with the CLI's sshProxy, as
// `dstack ssh-proxy RUN` will. Server, token and project come from DSTACK_SERVER_URL,
// DSTACK_TOKEN and DSTACK_PROJECT; errors go to stderr with exit status 255 (as ssh's own).
import { ConnectError } from "@connectrpc/connect";
import { sshProxy } from "../../cli/src/commands/ssh-proxy.js";

const run = process.argv[2];
const env = process.env;
if (!run || !env.DSTACK_SERVER_URL || !env.DSTACK_TOKEN) {
  process.stderr.write("usage: DSTACK_SERVER_URL=… DSTACK_TOKEN=… ssh-proxy-command.ts RUN\n");
  process.exit(2);
}
try {
  await sshProxy({ serverUrl: env.DSTACK_SERVER_URL, token: env.DSTACK_TOKEN, project: env.DSTACK_PROJECT ?? "main", run, stdin: process.stdin, stdout: process.stdout });
  process.exit(0);
} catch (e) {
  process.stderr.write(`dstack ssh-proxy: ${ConnectError.from(e).rawMessage}\n`);
  process.exit(255);
}
