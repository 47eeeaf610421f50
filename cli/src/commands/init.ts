// `dstack init`: checks that this directory can be used with the configured project — the
// server answers, the token is valid — and says what `dstack apply` will upload. (dstack's init
// registers Git credentials; this CLI uploads the working tree instead, so there is nothing to register.)
import type { Command } from "commander";
import { listCodeFiles, formatBytes } from "../client/code.js";
import type { CliIO } from "../io.js";
import { clientFor, withProject, type ProjectOptions } from "./common.js";

export function registerInit(program: Command, io: CliIO): void {
  withProject(program.command("init").description("check the server connection and show what `dstack apply` uploads from this directory")).action(
    async (options: ProjectOptions) => {
      const client = clientFor(io, options);
      const me = await client.users.me();
      await client.projects.get(client.project);
      const files = await listCodeFiles(io.cwd);
      const bytes = files.reduce((n, f) => n + f.size, 0);
      io.stdout.write(
        `Project ${client.project} on ${client.serverUrl}, as ${me.username}.\n` +
          `dstack apply uploads ${files.length} files (${formatBytes(bytes)} before compression) from ${io.cwd}; exclude more with .gitignore or .dstackignore.\n` +
          "OK\n",
      );
    },
  );
}
