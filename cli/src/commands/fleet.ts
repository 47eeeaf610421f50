// `dstack fleet [list]`, `fleet get NAME`, `fleet delete NAME`, `fleet join-token NAME`.
import { toJson } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Command } from "commander";
import { FleetSchema } from "@dstack/proto/api";
import { formatFleetsTable } from "../format/fleets.js";
import { confirm, type CliIO } from "../io.js";
import { clientFor, parseCount, parseDurationFlag, printJson, stdoutPalette, withProject, redrawUntilInterrupted, type ProjectOptions } from "./common.js";

interface ListOptions extends ProjectOptions {
  verbose?: boolean;
  json?: boolean;
  watch?: boolean;
}

export function registerFleet(program: Command, io: CliIO): void {
  const fleet = program.command("fleet").description("list and manage fleets");

  const list = async (options: ListOptions) => {
    const client = clientFor(io, options);
    const show = async () => {
      const fleets = await client.fleets.list();
      if (options.json) printJson(io, { project: client.project, fleets: fleets.map((f) => toJson(FleetSchema, f)) });
      else io.stdout.write(formatFleetsTable(fleets, { verbose: options.verbose ?? false, palette: stdoutPalette(io) }));
    };
    if (!options.watch) return show();
    // Fleets have no watch stream yet.
    return redrawUntilInterrupted(io, show);
  };
  const listOptions = (cmd: Command) =>
    withProject(cmd.option("-v, --verbose", "show resources and errors").option("-w, --watch", "redraw every 2 seconds (Ctrl-C exits)").option("--json", "output JSON"));

  // `dstack fleet` alone lists, like `dstack fleet list`.
  listOptions(fleet).action(list);
  listOptions(fleet.command("list").description("list fleets")).action(list);

  withProject(fleet.command("get").description("show one fleet").argument("<name>", "the fleet name").option("--json", "output JSON")).action(
    async (name: string, options: ProjectOptions & { json?: boolean }) => {
      const client = clientFor(io, options);
      const f = await client.fleets.get(name);
      if (options.json) printJson(io, toJson(FleetSchema, f));
      else io.stdout.write(formatFleetsTable([f], { verbose: true, palette: stdoutPalette(io) }));
    },
  );

  withProject(fleet.command("delete").description("delete a fleet and terminate its instances").argument("<name>", "the fleet name").option("-y, --yes", "do not ask for confirmation")).action(
    async (name: string, options: ProjectOptions & { yes?: boolean }) => {
      const client = clientFor(io, options);
      await client.fleets.get(name);
      if (!(await confirm(io, `Delete the fleet ${name}?`, { yes: options.yes ?? false }))) return void io.stdout.write("\nExiting...\n");
      await client.fleets.delete(name);
      io.stdout.write(`Fleet ${name} deleted\n`);
    },
  );

  withProject(
    fleet
      .command("join-token")
      .description("issue a token a host agent joins the fleet with (hosts dial home: nothing to open toward them)")
      .argument("<name>", "the fleet name")
      .option("--ttl <duration>", "how long the token is valid (default 1h)")
      .option("--max-uses <n>", "how many hosts may join with it (default 1)")
      .option("--json", "output JSON"),
  ).action(async (name: string, options: ProjectOptions & { ttl?: string; maxUses?: string; json?: boolean }) => {
    const client = clientFor(io, options);
    const t = await client.fleets.joinToken(name, {
      ...(options.ttl ? { ttlSeconds: parseDurationFlag("--ttl", options.ttl) } : {}),
      ...(options.maxUses ? { maxUses: parseCount("--max-uses", options.maxUses) } : {}),
    });
    const expires = t.expiresAt ? timestampDate(t.expiresAt).toISOString() : "";
    if (options.json) return printJson(io, { token: t.token, expiresAt: expires, agentUrl: t.agentUrl, caFingerprintSha256: t.caFingerprintSha256, installCommand: t.installCommand });
    io.stdout.write(`Token:      ${t.token}\nExpires:    ${expires}\nAgent URL:  ${t.agentUrl}\nCA SHA-256: ${t.caFingerprintSha256}\n`);
    if (t.installCommand) io.stdout.write(`\nOn the host, run:\n  ${t.installCommand}\n`);
    if (isLoopbackUrl(t.agentUrl)) {
      io.stdout.write(`\nOnly this machine can reach ${t.agentUrl}: for other hosts, start the server with --agent-url https://<address it has for them>:<agent port>.\n`);
    }
  });
}

/** Whether a URL names this machine's loopback (hosts elsewhere cannot dial it). */
function isLoopbackUrl(url: string): boolean {
  try {
    return /^(localhost|127(?:\.\d{1,3}){3}|\[::1\])$/i.test(new URL(url).hostname);
  } catch {
    return false;
  }
}
