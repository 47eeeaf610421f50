// `~/.dstack/ssh/config`: one `Host <run>` entry per attached run, so `ssh <run>`, `scp`, `rsync`
// and IDEs (VS Code Remote-SSH) reach the run's container. Nothing dials the host: the entry's
// ProxyCommand is `dstack ssh-proxy`, which rides a tunnel through the server. The file is the
// CLI's; the user's `~/.ssh/config` only needs `Include ~/.dstack/ssh/config` (we never edit it).
//
// Entries are updated in place (other hosts and anything else in the file are kept) and written
// atomically. The CLI removes a run's entry when it sees the run end while attached; a detach
// (Ctrl-C) keeps it, since the entry works without an attached CLI.
import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { dstackSshDir } from "./keys.js";

/** `<HOME>/.dstack/ssh/config`. */
export function dstackSshConfigPath(env: NodeJS.ProcessEnv): string {
  return join(dstackSshDir(env), "config");
}

/** The `Include` line `~/.ssh/config` needs so plain `ssh <run>` sees the entries. */
export const INCLUDE_LINE = "Include ~/.dstack/ssh/config";

/** The `dstack` entry point this CLI runs from (an absolute path; the ProxyCommand runs it with this Node). */
export const DSTACK_BIN = fileURLToPath(new URL("../../bin/dstack.js", import.meta.url));

export interface HostEntry {
  /** The `Host` alias: the run name (`<run>-<job>-<replica>` for other jobs than 0/0). */
  alias: string;
  project: string;
  run: string;
  replica?: number;
  job?: number;
  /** Login user; the container's SSH server runs commands as the container's user whatever it is. */
  user?: string;
  identityFile: string;
  /** Node executable and the dstack entry point; default this process's. */
  node?: string;
  dstackBin?: string;
}

/** The alias `ssh` takes for a job: the run name for job 0 of replica 0, else dstack's job name. */
export function hostAlias(run: string, replica = 0, job = 0): string {
  return replica === 0 && job === 0 ? run : `${run}-${job}-${replica}`;
}

/** A word for the shell that runs ProxyCommand: bare when safe, else double-quoted. */
function shellWord(s: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(s)) return s;
  return `"${s.replace(/(["\\$`])/g, "\\$1")}"`;
}

/** A value for ssh_config: double-quoted when it has blanks. */
function configWord(s: string): string {
  return /[\s"]/.test(s) ? `"${s.replace(/"/g, '\\"')}"` : s;
}

/** The entry's text, ending with a newline. */
export function formatHostEntry(e: HostEntry): string {
  const proxy = [
    `"${(e.node ?? process.execPath).replace(/(["\\$`])/g, "\\$1")}"`,
    `"${(e.dstackBin ?? DSTACK_BIN).replace(/(["\\$`])/g, "\\$1")}"`,
    "ssh-proxy",
    "--project",
    shellWord(e.project),
    ...(e.replica ? ["--replica", String(e.replica)] : []),
    ...(e.job ? ["--job", String(e.job)] : []),
    shellWord(e.run),
  ]
    .join(" ")
    // ssh expands %-tokens in ProxyCommand; a literal % is %%.
    .replace(/%/g, "%%");
  return [
    `Host ${e.alias}`,
    `  HostName ${e.alias}`,
    `  User ${e.user ?? "root"}`,
    `  IdentityFile ${configWord(e.identityFile.replace(/%/g, "%%"))}`,
    "  IdentitiesOnly yes",
    // The host key belongs to the host agent's SSH server and the tunnel is authenticated by the
    // server already; keep no known_hosts entries (and do not warn about not keeping them).
    "  StrictHostKeyChecking no",
    "  UserKnownHostsFile /dev/null",
    "  LogLevel ERROR",
    "  ServerAliveInterval 30",
    `  ProxyCommand ${proxy}`,
    "",
  ].join("\n");
}

interface Block {
  /** The `Host` patterns; null for text before the first Host/Match line and for Match blocks. */
  hosts: string[] | null;
  lines: string[];
}

function parseBlocks(text: string): Block[] {
  const blocks: Block[] = [{ hosts: null, lines: [] }];
  for (const line of text.split("\n")) {
    const m = /^\s*(host|match)(?:\s*=\s*|\s+)(.*)$/i.exec(line);
    if (m) blocks.push({ hosts: m[1]!.toLowerCase() === "host" ? m[2]!.trim().split(/\s+/) : null, lines: [line] });
    else blocks[blocks.length - 1]!.lines.push(line);
  }
  return blocks;
}

/** `text` with the block of `Host <alias>` (exactly that one pattern) replaced by `entry`, or removed when null. */
export function setHostEntry(text: string, alias: string, entry: string | null): string {
  const blocks = parseBlocks(text);
  const isOurs = (b: Block) => b.hosts?.length === 1 && b.hosts[0] === alias;
  let replaced = false;
  const out: string[] = [];
  for (const b of blocks) {
    if (isOurs(b)) {
      if (entry !== null && !replaced) out.push(entry.trimEnd(), "");
      replaced = true;
      continue;
    }
    out.push(...b.lines);
  }
  let result = out.join("\n").replace(/\n{3,}/g, "\n\n").replace(/^\n+/, "");
  if (entry !== null && !replaced) result = `${result.trimEnd()}${result.trim() ? "\n\n" : ""}${entry.trimEnd()}\n`;
  return result.trim() ? `${result.trimEnd()}\n` : "";
}

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return "";
    throw e;
  }
}

async function writeAtomically(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, text, { mode: 0o600 });
  await chmod(tmp, 0o600);
  await rename(tmp, path);
}

/** Writes (or replaces) the entry for `e.alias` in `~/.dstack/ssh/config`; returns the file's path. */
export async function writeHostEntry(env: NodeJS.ProcessEnv, e: HostEntry): Promise<string> {
  const path = dstackSshConfigPath(env);
  await writeAtomically(path, setHostEntry(await readText(path), e.alias, formatHostEntry(e)));
  return path;
}

/** Removes the entry for `alias` (no-op when there is none). */
export async function removeHostEntry(env: NodeJS.ProcessEnv, alias: string): Promise<void> {
  const path = dstackSshConfigPath(env);
  const text = await readText(path);
  const next = setHostEntry(text, alias, null);
  if (next !== text) await writeAtomically(path, next);
}

/**
 * Whether `~/.ssh/config` includes dstack's file (`Include ~/.dstack/ssh/config`, the absolute
 * path, or a glob over the directory). A missing file includes nothing.
 */
export async function userConfigIncludesDstack(env: NodeJS.ProcessEnv): Promise<boolean> {
  const home = env.HOME || homedir();
  const text = await readText(join(home, ".ssh", "config"));
  const ours = dstackSshConfigPath(env);
  for (const line of text.split("\n")) {
    const m = /^\s*include(?:\s*=\s*|\s+)(.*)$/i.exec(line);
    if (!m) continue;
    for (const raw of m[1]!.trim().split(/\s+/)) {
      const p = raw.replace(/^"|"$/g, "").replace(/^~(?=\/)/, home);
      if (p === ours || p === join(dirname(ours), "*")) return true;
    }
  }
  return false;
}
