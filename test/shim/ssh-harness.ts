// Helpers for the embedded SSH server's integration tests: client keys made by ssh-keygen, task
// containers started from the local test images, and the real OpenSSH client run as a child.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type Docker from "dockerode";
import { docker, TEST_CONTAINER_LABEL } from "../helpers/docker.js";

export function tempDir(prefix: string): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface ClientKey {
  path: string;
  /** The .pub line ("ssh-ed25519 AAAA… comment"). */
  pub: string;
}

/** A passphrase-less client key made by ssh-keygen. */
export function makeClientKey(dir: string, name: string, type: "ed25519" | "rsa" = "ed25519", bits?: number): ClientKey {
  const path = join(dir, name);
  execFileSync("ssh-keygen", ["-q", "-t", type, ...(bits ? ["-b", String(bits)] : []), "-N", "", "-C", `${name}@test`, "-f", path]);
  return { path, pub: readFileSync(`${path}.pub`, "utf8").trim() };
}

export interface TaskContainer {
  container: Docker.Container;
  id: string;
  /** Bridge IP, "" under host networking. */
  ip: string;
  remove(): Promise<void>;
}

/** Starts `sleep 3600` in `image` with the given network mode, as a task container would run. */
export async function startTaskContainer(image: string, networkMode: "host" | "bridge"): Promise<TaskContainer> {
  const d = docker();
  const container = await d.createContainer({
    Image: image,
    Cmd: ["sleep", "3600"],
    Labels: { [TEST_CONTAINER_LABEL]: "1" },
    HostConfig: { NetworkMode: networkMode, AutoRemove: false },
  });
  await container.start();
  const info = await container.inspect();
  return {
    container,
    id: container.id,
    ip: info.NetworkSettings.Networks[networkMode]?.IPAddress ?? "",
    remove: () => container.remove({ force: true, v: true }).then(() => undefined, () => undefined),
  };
}

/** Runs a command in a container to completion and returns its exit code and output. */
export async function execIn(container: Docker.Container, cmd: string[]): Promise<{ code: number; output: string }> {
  const exec = await container.exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true });
  const stream = await exec.start({ hijack: true, stdin: false });
  const chunks: Buffer[] = [];
  stream.on("data", (c: Buffer) => chunks.push(c));
  await new Promise((r) => stream.on("end", r));
  let info = await exec.inspect();
  while (info.Running) info = await exec.inspect();
  return { code: info.ExitCode ?? -1, output: Buffer.concat(chunks).toString("latin1") };
}

/** A TCP port nobody listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface SshResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** OpenSSH client options every test uses: no config, no host-key prompts, this key only. */
export function sshBaseArgs(key: string, port: number, logLevel = "ERROR"): string[] {
  return [
    "-F", "/dev/null",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "IdentitiesOnly=yes",
    "-o", "BatchMode=yes",
    "-o", `LogLevel=${logLevel}`,
    "-i", key,
    "-p", String(port),
  ];
}

/** Spawns `ssh` with `args`; `input` is written to its stdin, which is then closed. */
export function spawnSsh(args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; command?: string } = {}): { child: ChildProcess; done: Promise<SshResult> } {
  const child = spawn(opts.command ?? "ssh", args, { env: { ...process.env, ...opts.env }, stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (s: string) => (stdout += s));
  child.stderr!.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  if (opts.input !== undefined) child.stdin!.end(opts.input);
  const done = new Promise<SshResult>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
  return { child, done };
}

export function runSsh(args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; command?: string } = {}): Promise<SshResult> {
  return spawnSsh(args, { input: "", ...opts }).done;
}

/** Resolves once `child`'s stdout has printed `text`. */
export function waitForOutput(child: ChildProcess, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = "";
    const onData = (c: Buffer | string) => {
      seen += c.toString();
      if (seen.includes(text)) {
        child.stdout!.off("data", onData);
        resolve();
      }
    };
    child.stdout!.on("data", onData);
    child.once("close", () => reject(new Error(`process ended before printing ${JSON.stringify(text)}; saw ${JSON.stringify(seen)}`)));
  });
}
