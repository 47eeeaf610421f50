// `files:` end to end: the `dstack` binary packs each mapping, uploads what the REAL server does
// not hold yet, and the task running on the local fleet (real Docker) finds the file and the
// directory at their container paths. Also: the upload limit names the mapping, and a run spec
// naming an archive the project lacks is refused at apply.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Client } from "../../cli/src/index.js";
import { TEST_IMAGES, requireTestImages } from "../helpers/docker.js";
import { localFleetReady, startTestServer, type ServerEnv, type TestServer } from "../helpers/server.js";
import { dstack } from "./run-cli.js";

const SLOW = 240_000;
// Unique per process, so a concurrent run of this file on the same Docker engine never shares a container name.
const RUN = `files-task-${process.pid.toString(36)}${Date.now().toString(36).slice(-3)}`;

let server: TestServer & { where: ServerEnv };
let small: (TestServer & { where: ServerEnv }) | undefined;
let client: Client;
let work: string;

beforeAll(async () => {
  await requireTestImages([TEST_IMAGES.busybox]);
  server = await startTestServer("sqlite", { localFleet: true });
  await localFleetReady(server);
  work = await mkdtemp(join(tmpdir(), "dstack-cli-files-"));
  client = Client.fromConfig({ env: { HOME: server.where.home } });
}, SLOW);

afterAll(async () => {
  await server?.stop();
  await small?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe("dstack apply with files:", () => {
  it(
    "a file and a directory mapping are in the container at their paths; unchanged archives are not uploaded again",
    async () => {
      const d = await mkdtemp(join(work, "proj-"));
      // The configuration lives in a subdirectory: local paths are relative to it, not to the cwd.
      await mkdir(join(d, "conf", "assets", "nested"), { recursive: true });
      await writeFile(join(d, "conf", "notes.txt"), "note-42\n");
      await writeFile(join(d, "conf", "assets", "a.txt"), "alpha\n");
      await writeFile(join(d, "conf", "assets", "nested", "b.txt"), "beta\n");
      await writeFile(
        join(d, "conf", "task.dstack.yml"),
        [
          "type: task",
          `name: ${RUN}`,
          `image: ${TEST_IMAGES.busybox}`,
          "working_dir: /work",
          "files:",
          "  - notes.txt:/etc/extra/notes-copy.txt",
          "  - local_path: assets",
          "    path: data",
          "commands:",
          "  - cat /etc/extra/notes-copy.txt",
          "  - cat /work/data/a.txt data/nested/b.txt",
          "resources:",
          "  cpu: 1..",
          "  memory: 256MB..",
          "",
        ].join("\n"),
      );
      const r = await dstack(["apply", "-y", "--no-repo", "-f", "conf/task.dstack.yml"], { home: server.where.home, cwd: d });
      const out = r.stdout.slice(r.stdout.indexOf("Attaching"));
      expect(out, r.stderr).toContain("note-42\nalpha\nbeta\n");
      expect(r.code).toBe(0);

      const run = await client.runs.get(RUN);
      const archives = run.runSpec?.fileArchives ?? [];
      expect(archives.map((a) => a.path).sort()).toEqual(["/etc/extra", "data"]);
      // Same content again: the server has both archives, nothing is sent.
      const again = await client.runs.uploadFiles([{ localPath: "notes.txt", path: "/etc/extra/notes-copy.txt" }, { localPath: "assets", path: "data" }], join(d, "conf"));
      expect(again.map((a) => a.uploaded)).toEqual([false, false]);
      expect(again.map((a) => a.archiveHash).sort()).toEqual(archives.map((a) => a.archiveHash).sort());
    },
    SLOW,
  );

  it(
    "a missing local path is a usage error naming it",
    async () => {
      const d = await mkdtemp(join(work, "proj-"));
      await writeFile(join(d, ".dstack.yml"), ["type: task", "name: files-missing", `image: ${TEST_IMAGES.busybox}`, "files:", "  - nope.txt:/x/nope.txt", "commands:", "  - echo ok", ""].join("\n"));
      const r = await dstack(["apply", "-y", "--no-repo"], { home: server.where.home, cwd: d });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/files: nope\.txt: no such file or directory/);
    },
    SLOW,
  );

  it(
    "apply is refused when the run spec names an archive the project does not hold",
    async () => {
      const { parseConfiguration } = await import("@dstack/proto");
      const configuration = parseConfiguration(["type: task", "name: files-ghost", `image: ${TEST_IMAGES.busybox}`, "commands:", "  - echo ok", ""].join("\n"), "ghost.yml");
      if (configuration.type !== "task") throw new Error("expected a task");
      const ghost = "ab".repeat(32);
      await expect(
        client.runs.apply({ configuration, fileArchives: [{ archiveHash: ghost, path: "/ghost", localPath: "ghost", bytes: 0, uploaded: false }] }),
      ).rejects.toThrow(new RegExp(`'/ghost' names archive ${ghost}, which project 'main' does not hold`));
    },
    SLOW,
  );

  it(
    "an archive above the server's upload limit fails with an error naming the mapping",
    async () => {
      small = await startTestServer("sqlite", { env: { DSTACK_SERVER_CODE_UPLOAD_LIMIT: "2048" } });
      const d = await mkdtemp(join(work, "proj-"));
      await mkdir(join(d, "big"));
      // Random bytes do not compress: well above 2 KiB gzipped.
      const { randomBytes } = await import("node:crypto");
      await writeFile(join(d, "big", "blob.bin"), randomBytes(64 * 1024));
      await writeFile(join(d, ".dstack.yml"), ["type: task", "name: files-big", `image: ${TEST_IMAGES.busybox}`, "files:", "  - big:/data/big", "commands:", "  - echo ok", ""].join("\n"));
      const r = await dstack(["apply", "-y", "--no-repo"], { home: small.where.home, cwd: d });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/files: big is [\d.]+KB compressed \(1 files\), above the server's upload limit of 2KB/);
      expect(r.stderr).toContain("blob.bin");
    },
    SLOW,
  );
});
