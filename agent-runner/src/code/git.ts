// Remote repos: clone with the image's own git when it has one (complete: SSH, every protocol
// extension), else with the runner's built-in pure-JS git over HTTP(S) (jsgit.ts); check out the
// commit, apply the uploaded diff.
import { spawn } from "node:child_process";
import { accessSync, constants, existsSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { cloneWithoutGit } from "./jsgit.js";

export interface GitRepoSpec {
  cloneUrl: string;
  branch: string;
  hash: string;
  configName: string;
  configEmail: string;
  skipIfExists: boolean;
  singleBranch: boolean;
  privateKey: string;
  oauthToken: string;
}

export class GitError extends Error {
  override name = "GitError";
}

/** The first executable `git` on PATH, or null. */
export function findGit(path = process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin"): string | null {
  for (const dir of path.split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, "git");
    try {
      if (statSync(p).isFile()) {
        accessSync(p, constants.X_OK);
        return p;
      }
    } catch {
      /* not here */
    }
  }
  return null;
}

/** The clone URL with an OAuth token as HTTPS credentials (works for GitHub and GitLab). */
export function authenticatedUrl(url: string, token: string): string {
  if (!token || !/^https?:\/\//.test(url)) return url;
  const u = new URL(url);
  u.username = "oauth2";
  u.password = token;
  return u.toString();
}

/** Hides credentials in anything shown to the user. */
export const redact = (text: string, token: string): string => (token ? text.split(token).join("***") : text);

function run(git: string, args: string[], o: { cwd?: string; env: NodeJS.ProcessEnv; log(line: string): void; token: string }): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(git, args, { cwd: o.cwd, env: o.env, stdio: ["ignore", "pipe", "pipe"] });
    let tail = "";
    const onData = (d: Buffer) => {
      const text = redact(d.toString(), o.token);
      tail = (tail + text).slice(-2000);
      o.log(text);
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.once("error", (e) => reject(new GitError(`cannot run git: ${e.message}`)));
    child.once("close", (code) => (code === 0 ? resolve() : reject(new GitError(`git ${args[0]} failed with status ${code}: ${tail.trim().split("\n").at(-1) ?? ""}`))));
  });
}

/**
 * Clones `spec` into `repoDir` and applies `diffFile` (the uploaded uncommitted changes) when
 * given. An existing non-empty `repoDir` is kept when skipIfExists, else an error.
 */
export async function prepareGitRepo(
  spec: GitRepoSpec,
  repoDir: string,
  o: { diffFile?: string; keyDir: string; env: NodeJS.ProcessEnv; log(text: string): void },
): Promise<"cloned" | "skipped"> {
  if (existsSync(repoDir) && readdirSync(repoDir).length > 0) {
    if (spec.skipIfExists) return "skipped";
    throw new GitError(`the repo directory ${repoDir} already exists and is not empty (set repos[].if_exists: skip to keep it)`);
  }
  const git = findGit(o.env.PATH);
  if (!git) {
    o.log("the image has no git: cloning with the runner's built-in git\n");
    await cloneWithoutGit(spec, repoDir, o);
    return "cloned";
  }
  const env: NodeJS.ProcessEnv = { ...o.env, GIT_TERMINAL_PROMPT: "0" };
  const keyFile = join(o.keyDir, "git-key");
  if (spec.privateKey) {
    writeFileSync(keyFile, spec.privateKey.endsWith("\n") ? spec.privateKey : spec.privateKey + "\n", { mode: 0o600 });
    env.GIT_SSH_COMMAND = `ssh -i ${keyFile} -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new`;
  }
  const opts = { env, log: o.log, token: spec.oauthToken };
  try {
    const args = ["clone", "--quiet"];
    if (spec.branch) args.push("--branch", spec.branch);
    if (spec.singleBranch) args.push("--single-branch");
    args.push(authenticatedUrl(spec.cloneUrl, spec.oauthToken), repoDir);
    await run(git, args, opts);
    if (spec.hash) await run(git, ["-C", repoDir, "checkout", "--quiet", spec.hash], opts);
    if (spec.configName) await run(git, ["-C", repoDir, "config", "user.name", spec.configName], opts);
    if (spec.configEmail) await run(git, ["-C", repoDir, "config", "user.email", spec.configEmail], opts);
    if (o.diffFile && statSync(o.diffFile).size > 0) await run(git, ["-C", repoDir, "apply", "--whitespace=nowarn", o.diffFile], opts);
    // Do not leave the token in .git/config.
    if (spec.oauthToken) await run(git, ["-C", repoDir, "remote", "set-url", "origin", spec.cloneUrl], opts);
    return "cloned";
  } finally {
    rmSync(keyFile, { force: true });
  }
}
