// Remote repos in images without git: isomorphic-git (pure JS, inside the runner bundle) clones
// over HTTP(S) smart protocol, or over SSH through sshgit.ts (ssh2, also pure JS), and checks out
// the commit; the uploaded diff is applied by patch.ts.
import * as fs from "node:fs";
import git from "isomorphic-git";
import http from "isomorphic-git/http/node";
import { GitError, type GitRepoSpec } from "./git.js";
import { applyPatch, PatchError } from "./patch.js";
import { parseSshUrl, SshGitTransport } from "./sshgit.js";

/** The URL without credentials, and the credentials: user:password in the URL, or the OAuth token. */
export function splitCredentials(cloneUrl: string, oauthToken: string): { url: string; shown: string; auth: { username: string; password: string } | null } {
  let u: URL;
  try {
    u = new URL(cloneUrl);
  } catch {
    throw new GitError(`the repo URL ${JSON.stringify(cloneUrl)} is not a URL`);
  }
  let auth: { username: string; password: string } | null = null;
  if (u.username || u.password) auth = { username: decodeURIComponent(u.username), password: decodeURIComponent(u.password) };
  u.username = "";
  u.password = "";
  // A token wins: it is what the server resolved for this repo (GitHub and GitLab take it as the password).
  if (oauthToken) auth = { username: auth?.username || "oauth2", password: oauthToken };
  return { url: u.toString(), shown: u.toString(), auth };
}

export const isSshUrl = (url: string): boolean => /^(?:ssh|git\+ssh|ssh\+git):\/\//.test(url) || /^[^/:@]+@[^/:]+:/.test(url);

/** Clones `spec` into `repoDir` with isomorphic-git and applies `diffFile`; errors name the repo URL. */
export async function cloneWithoutGit(spec: GitRepoSpec, repoDir: string, o: { diffFile?: string; log(text: string): void }): Promise<void> {
  const ssh = isSshUrl(spec.cloneUrl);
  if (!ssh && !/^https?:\/\//.test(spec.cloneUrl)) throw new GitError(`the repo URL ${spec.cloneUrl} is neither HTTP(S) nor SSH, and the image has no git`);
  // isomorphic-git only takes http(s) URLs: over SSH it gets a placeholder, the transport knows the target.
  const transport = ssh ? new SshGitTransport(parseSshUrl(spec.cloneUrl), spec.privateKey, o.log) : null;
  const { url, shown, auth } = ssh ? { url: "http://ssh-transport.invalid/repo", shown: spec.cloneUrl, auth: null } : splitCredentials(spec.cloneUrl, spec.oauthToken);
  let lastPhase = "";
  try {
    await git.clone({
      fs,
      http: transport?.http ?? http,
      dir: repoDir,
      url,
      ...(spec.branch ? { ref: spec.branch } : {}),
      singleBranch: spec.singleBranch,
      // The commit is checked out below; the branch head need not be written first.
      noCheckout: Boolean(spec.hash),
      onAuth: () => auth ?? { cancel: true },
      // One try: a wrong credential is reported, not retried.
      onAuthFailure: () => ({ cancel: true }),
      onProgress: (p) => {
        if (p.phase !== lastPhase) {
          lastPhase = p.phase;
          o.log(`${p.phase}\n`);
        }
      },
    });
  } catch (e) {
    throw new GitError(`cannot clone ${shown}: ${describe(e, auth !== null)}`);
  } finally {
    transport?.close();
  }
  // The remote as the user named it, not the placeholder.
  if (transport) await git.setConfig({ fs, dir: repoDir, path: "remote.origin.url", value: spec.cloneUrl });
  try {
    if (spec.hash) await git.checkout({ fs, dir: repoDir, ref: spec.hash, force: true });
  } catch (e) {
    throw new GitError(`cannot check out commit ${spec.hash} of ${shown}${spec.singleBranch && spec.branch ? ` (only branch ${spec.branch} was fetched)` : ""}: ${describe(e)}`);
  }
  if (spec.configName) await git.setConfig({ fs, dir: repoDir, path: "user.name", value: spec.configName });
  if (spec.configEmail) await git.setConfig({ fs, dir: repoDir, path: "user.email", value: spec.configEmail });
  if (o.diffFile && fs.statSync(o.diffFile).size > 0) {
    try {
      const r = applyPatch(repoDir, fs.readFileSync(o.diffFile));
      o.log(`applied the uploaded diff: ${r.written.length} file(s) written, ${r.removed.length} removed\n`);
    } catch (e) {
      if (e instanceof PatchError) throw new GitError(`${e.message} (repo ${shown}${spec.hash ? ` at ${spec.hash}` : ""})`);
      throw e;
    }
  }
}

function describe(e: unknown, hadAuth = true): string {
  const err = e as { code?: string; data?: { statusCode?: number; statusMessage?: string }; message?: string };
  if (err?.code === "UserCanceledError" || err?.data?.statusCode === 401 || err?.data?.statusCode === 403) {
    return hadAuth
      ? "the server refused the credentials (HTTP 401/403): check the repo's token or user and password"
      : "the server asks for credentials (HTTP 401) and the job has none: add the repo's credentials";
  }
  if (err?.code === "HttpError" && err.data) return `HTTP ${err.data.statusCode} ${err.data.statusMessage ?? ""}`.trim();
  if (err?.code === "NotFoundError") return err.message ?? "not found";
  return err?.message ?? String(e);
}
