// The Unix user the job runs as. Images may have no /etc/passwd (busybox, distroless), so the
// files are read by hand (os.userInfo() throws there) and a bare uid is accepted as is.
import { readFileSync } from "node:fs";

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

export interface ResolvedUser {
  uid: number;
  gid: number;
  username: string;
  home: string;
}

/** The wanted user, as SubmitJob's RunnerUser carries it. */
export interface UserRequest {
  uid?: number;
  username?: string;
  gid?: number;
  groupname?: string;
}

export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const f = line.split(":");
    if (f.length < 7) continue;
    const uid = Number(f[2]);
    const gid = Number(f[3]);
    if (!Number.isInteger(uid) || !Number.isInteger(gid)) continue;
    out.push({ name: f[0]!, uid, gid, home: f[5]!, shell: f[6]! });
  }
  return out;
}

export function parseGroup(text: string): { name: string; gid: number }[] {
  const out: { name: string; gid: number }[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 3 || line.startsWith("#")) continue;
    const gid = Number(f[2]);
    if (Number.isInteger(gid)) out.push({ name: f[0]!, gid });
  }
  return out;
}

const readOr = (path: string): string => {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
};

export class UserError extends Error {
  override name = "UserError";
}

/**
 * Resolves the job user. Nothing asked = the runner's own user. A uid not in /etc/passwd is
 * still valid (Docker allows `--user 1234`): its name is the number, home `/`, group = uid.
 */
export function resolveUser(
  want: UserRequest | undefined,
  files: { passwd?: string; group?: string } = { passwd: readOr("/etc/passwd"), group: readOr("/etc/group") },
  self: { uid: number; gid: number } = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 },
): ResolvedUser {
  const passwd = parsePasswd(files.passwd ?? "");
  const groups = parseGroup(files.group ?? "");
  let entry: PasswdEntry | undefined;
  let uid: number;
  if (want?.uid !== undefined) {
    uid = want.uid;
    entry = passwd.find((p) => p.uid === uid);
  } else if (want?.username) {
    const name = want.username;
    entry = passwd.find((p) => p.name === name);
    if (!entry) throw new UserError(`user '${name}' does not exist in the image (/etc/passwd has no such entry); give a numeric uid instead`);
    uid = entry.uid;
  } else {
    uid = self.uid;
    entry = passwd.find((p) => p.uid === uid);
  }
  let gid: number;
  if (want?.gid !== undefined) gid = want.gid;
  else if (want?.groupname) {
    const g = groups.find((x) => x.name === want.groupname);
    if (!g) throw new UserError(`group '${want.groupname}' does not exist in the image (/etc/group has no such entry); give a numeric gid instead`);
    gid = g.gid;
  } else gid = entry?.gid ?? (want?.uid !== undefined ? uid : self.gid);
  const username = entry?.name || want?.username || (uid === 0 ? "root" : String(uid));
  const home = entry?.home || (uid === 0 ? "/root" : "/");
  return { uid, gid, username, home };
}
