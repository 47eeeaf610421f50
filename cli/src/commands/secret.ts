// `dstack secret [list]`, `secret get NAME`, `secret set NAME VALUE`, `secret delete NAME`.
// Values go to the server and never come back: listings show names only.
import type { Command } from "commander";
import { renderTable } from "../format/table.js";
import { confirm, type CliIO } from "../io.js";
import { clientFor, printJson, stdoutPalette, withProject, type ProjectOptions } from "./common.js";

export function registerSecret(program: Command, io: CliIO): void {
  const secret = program.command("secret").description("manage the project's secrets (referenced as ${{ secrets.NAME }})");

  const list = async (options: ProjectOptions & { json?: boolean }) => {
    const client = clientFor(io, options);
    const secrets = await client.secrets.list();
    if (options.json) return printJson(io, { project: client.project, secrets: secrets.map((s) => ({ name: s.name })) });
    io.stdout.write(renderTable([{ header: "NAME" }, { header: "VALUE" }], secrets.map((s) => [s.name, "******"]), { headerStyle: stdoutPalette(io).bold }));
  };
  withProject(secret.option("--json", "output JSON")).action(list);
  withProject(secret.command("list").description("list secrets").option("--json", "output JSON")).action(list);

  withProject(secret.command("get").description("show a secret (its value stays on the server)").argument("<name>", "the secret name")).action(
    async (name: string, options: ProjectOptions) => {
      const s = await clientFor(io, options).secrets.get(name);
      io.stdout.write(renderTable([{ header: "NAME" }, { header: "VALUE" }], [[s.name, "******"]], { headerStyle: stdoutPalette(io).bold }));
    },
  );

  withProject(secret.command("set").description("create a secret or replace its value").argument("<name>", "the secret name").argument("<value>", "the value")).action(
    async (name: string, value: string, options: ProjectOptions) => {
      await clientFor(io, options).secrets.set(name, value);
      io.stdout.write("OK\n");
    },
  );

  withProject(secret.command("delete").description("delete a secret").argument("<name>", "the secret name").option("-y, --yes", "do not ask for confirmation")).action(
    async (name: string, options: ProjectOptions & { yes?: boolean }) => {
      const client = clientFor(io, options);
      await client.secrets.get(name);
      if (!(await confirm(io, `Delete the secret ${name}?`, { yes: options.yes ?? false }))) return void io.stdout.write("\nExiting...\n");
      await client.secrets.delete(name);
      io.stdout.write("OK\n");
    },
  );
}
