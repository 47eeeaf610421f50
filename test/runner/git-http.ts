// A real git smart-HTTP server for tests: Debian's `git http-backend` (CGI) behind a small Node
// HTTP server with Basic auth, serving bare repositories made with the host's git.
import { spawn, execFileSync } from "node:child_process";
import { createServer, type Server } from "node:http";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";

const BACKEND = "/usr/lib/git-core/git-http-backend";

export interface GitHttpServer {
  port: number;
  /** Requests answered, with their status (to see auth failures and retries). */
  requests: { method: string; url: string; status: number }[];
  close(): Promise<void>;
}

/** Serves every bare repo under `root` at /<name>.git; requests need Basic `user:password`. */
export async function startGitHttp(root: string, creds: { user: string; password: string }): Promise<GitHttpServer> {
  const requests: GitHttpServer["requests"] = [];
  const expected = "Basic " + Buffer.from(`${creds.user}:${creds.password}`).toString("base64");
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    const done = (status: number) => requests.push({ method: req.method ?? "", url: req.url ?? "", status });
    if (req.headers.authorization !== expected) {
      res.writeHead(401, { "WWW-Authenticate": 'Basic realm="git"' }).end("unauthorized\n");
      return done(401);
    }
    const cgi = spawn(BACKEND, [], {
      env: {
        GIT_PROJECT_ROOT: root,
        GIT_HTTP_EXPORT_ALL: "1",
        REQUEST_METHOD: req.method ?? "GET",
        PATH_INFO: decodeURIComponent(url.pathname),
        QUERY_STRING: url.search.slice(1),
        CONTENT_TYPE: req.headers["content-type"] ?? "",
        ...(req.headers["content-encoding"] ? { HTTP_CONTENT_ENCODING: req.headers["content-encoding"] } : {}),
        ...(req.headers["git-protocol"] ? { GIT_PROTOCOL: String(req.headers["git-protocol"]) } : {}),
        REMOTE_USER: creds.user,
        REMOTE_ADDR: req.socket.remoteAddress ?? "",
        PATH: process.env.PATH ?? "/usr/bin:/bin",
      },
      stdio: ["pipe", "pipe", "inherit"],
    });
    req.pipe(cgi.stdin);
    // CGI output: headers, a blank line, the body.
    let head = Buffer.alloc(0);
    let sent = false;
    cgi.stdout.on("data", (d: Buffer) => {
      if (sent) return void res.write(d);
      head = Buffer.concat([head, d]);
      const crlf = head.indexOf("\r\n\r\n");
      const lf = head.indexOf("\n\n");
      const end = crlf >= 0 && (lf < 0 || crlf < lf) ? crlf : lf;
      if (end < 0) return;
      const sep = end === crlf ? 4 : 2;
      let status = 200;
      const headers: Record<string, string> = {};
      for (const line of head.subarray(0, end).toString().split(/\r?\n/)) {
        const i = line.indexOf(":");
        const k = line.slice(0, i).trim();
        const v = line.slice(i + 1).trim();
        if (k.toLowerCase() === "status") status = Number(v.split(" ")[0]);
        else headers[k] = v;
      }
      res.writeHead(status, headers);
      done(status);
      sent = true;
      res.write(head.subarray(end + sep));
    });
    cgi.once("close", () => {
      if (!sent) {
        res.writeHead(500).end("git http-backend failed\n");
        done(500);
      } else res.end();
    });
  });
  await new Promise<void>((ok) => server.listen(0, "0.0.0.0", ok));
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    close: () => new Promise((ok) => server.close(() => ok())),
  };
}

export interface TestRepo {
  /** The dir holding `<name>.git` (the server's project root). */
  root: string;
  name: string;
  /** Commit of the first revision, which the job checks out (the branch moved on since). */
  first: string;
  /** `git diff --binary` of local changes against `first`: a modified, a new and a deleted file. */
  diff: Buffer;
}

/** A bare repo `project.git` with two commits on main, and a diff against the first one. */
export function makeTestRepo(): TestRepo {
  const root = mkdtempSync(join(tmpdir(), "git-http-root-"));
  const work = mkdtempSync(join(tmpdir(), "git-http-work-"));
  const git = (...a: string[]) => execFileSync("git", ["-C", work, "-c", "user.name=t", "-c", "user.email=t@e", ...a], { encoding: "utf8" }).trim();
  git("init", "-q", "-b", "main");
  writeFileSync(join(work, "train.py"), "print('v1')\nprint('epoch')\n");
  writeFileSync(join(work, "obsolete.txt"), "old notes\n");
  writeFileSync(join(work, "README.md"), "# project\n");
  git("add", ".");
  git("commit", "-qm", "first");
  const first = git("rev-parse", "HEAD");
  writeFileSync(join(work, "train.py"), "print('v2 on main')\n");
  git("commit", "-qam", "second");
  // Local changes on top of `first`, as the CLI uploads them.
  git("checkout", "-q", first);
  writeFileSync(join(work, "train.py"), "print('v1 with local changes')\nprint('epoch')\n");
  writeFileSync(join(work, "new_module.py"), "VALUE = 42\n");
  git("rm", "-q", "obsolete.txt");
  git("add", "-A");
  const diff = execFileSync("git", ["-C", work, "diff", "--cached", "--binary", "HEAD"]);
  git("checkout", "-q", "-f", "main");
  execFileSync("git", ["clone", "-q", "--bare", work, join(root, "project.git")]);
  return { root, name: "project.git", first, diff };
}
