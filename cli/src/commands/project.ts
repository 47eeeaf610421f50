// `dstack project add|list|set-default|delete`: the CLI's own list of projects (servers and
// tokens) in ~/.dstack/config.yml. `add` checks the URL and token against the server first.
import type { Command } from "commander";
import { Client } from "../client/client.js";
import { configPath, readProjects, removeProject, setDefaultProject, upsertProject } from "../client/config.js";
import { DstackError } from "../client/errors.js";
import { renderTable } from "../format/table.js";
import { CliError, confirm, type CliIO } from "../io.js";
import { printJson, stdoutPalette } from "./common.js";

interface AddOptions {
  name: string;
  url: string;
  token: string;
  yes?: boolean;
  no?: boolean;
}

export function registerProject(program: Command, io: CliIO): void {
  const project = program.command("project").description("manage the projects this CLI knows (~/.dstack/config.yml)");

  project
    .command("add")
    .description("add or update a project: its server URL and your token")
    .requiredOption("--name <name>", "the project name")
    .requiredOption("--url <url>", "the server URL, e.g. http://127.0.0.1:3000")
    .requiredOption("--token <token>", "your user token")
    .option("-y, --yes", "make it the default project without asking")
    .option("-n, --no", "do not make it the default project")
    .action(async (options: AddOptions & { no?: boolean }) => {
      // commander turns -n/--no into `no: true`… or, being a negation flag, yes=false; accept both.
      const path = configPath(io.env);
      const client = new Client({ serverUrl: options.url, token: options.token, project: options.name });
      try {
        await client.projects.get(options.name);
      } catch (e) {
        if (e instanceof DstackError && e.kind === "not_found") throw new DstackError("not_found", `Project '${options.name}' does not exist on ${options.url} (or you are not a member).`);
        throw e;
      }
      const existing = readProjects(path);
      const current = existing.find((p) => p.default);
      let makeDefault: boolean;
      if (options.no) makeDefault = false;
      else if (options.yes || !current || current.name === options.name) makeDefault = true;
      else makeDefault = io.stdin.isTTY ? await confirm(io, `Set '${options.name}' as your default project?`) : false;
      upsertProject(path, { name: options.name, url: options.url.replace(/\/+$/, ""), token: options.token }, makeDefault);
      io.stdout.write(`Configuration updated at ${path}\n`);
    });

  const list = (options: { json?: boolean }) => {
    const path = configPath(io.env);
    const projects = readProjects(path);
    const fallback = projects.find((p) => p.default) ?? (projects.length === 1 ? projects[0] : undefined);
    if (options.json) return printJson(io, projects.map((p) => ({ name: p.name, url: p.url, default: p === fallback })));
    const p = stdoutPalette(io);
    io.stdout.write(
      renderTable(
        [{ header: "PROJECT" }, { header: "URL" }, { header: "DEFAULT" }],
        projects.map((x) => [{ text: x.name, style: p.bold }, { text: x.url, style: p.dim }, x === fallback ? "✓" : ""]),
        { headerStyle: p.bold },
      ),
    );
  };
  project.option("--json", "output JSON").action(list);
  project.command("list").description("list configured projects").option("--json", "output JSON").action(list);

  project
    .command("set-default")
    .description("make a configured project the default")
    .argument("<name>", "the project name")
    .action((name: string) => {
      const path = configPath(io.env);
      if (!setDefaultProject(path, name)) {
        const known = readProjects(path).map((p) => p.name);
        throw new CliError(`Project '${name}' is not configured${known.length ? ` (configured: ${known.join(", ")})` : ""}. Add it with \`dstack project add\`.`);
      }
      io.stdout.write("OK\n");
    });

  project
    .command("delete")
    .description("remove a project from the CLI config (nothing changes on the server)")
    .requiredOption("--name <name>", "the project name")
    .option("-y, --yes", "do not ask for confirmation")
    .action(async (options: { name: string; yes?: boolean }) => {
      const path = configPath(io.env);
      if (!readProjects(path).some((p) => p.name === options.name)) throw new CliError(`Project '${options.name}' is not configured.`);
      if (!(await confirm(io, `Remove project '${options.name}' from ${path}?`, { yes: options.yes ?? false }))) return;
      removeProject(path, options.name);
      io.stdout.write("OK\n");
    });
}
