// The CLI's SSH identity, as dstack keeps it: `~/.dstack/ssh/id_rsa` and `id_rsa.pub` (the name
// is dstack's, the key is ed25519). Created on first need: by `ssh-keygen` when it is installed,
// otherwise here with node:crypto, written in OpenSSH's own private key format so `ssh -i` reads it.
// Its public key goes into each run's `ssh_key_pub`; the server lets it into the run's containers.
import { execFile } from "node:child_process";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { chmod, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { homedir, hostname, userInfo } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { CliError } from "../io.js";

const exec = promisify(execFile);

/** `<HOME>/.dstack/ssh`, with HOME from `env` (tests move it). */
export function dstackSshDir(env: NodeJS.ProcessEnv): string {
  return join(env.HOME || homedir(), ".dstack", "ssh");
}

export interface SshIdentity {
  /** The private key file (`~/.dstack/ssh/id_rsa`). */
  privateKeyPath: string;
  /** One OpenSSH line: `ssh-ed25519 AAAA… comment`. */
  publicKey: string;
  /** Whether this call made the key. */
  created: boolean;
}

function keyComment(): string {
  let user = "dstack";
  try {
    user = userInfo().username || user;
  } catch {
    // no passwd entry (containers): keep the default
  }
  return `${user}@${hostname()} (dstack)`;
}

/** The identity under `env.HOME`, made if missing. A private key without its `.pub` gets one back from `ssh-keygen -y`. */
export async function ensureSshIdentity(env: NodeJS.ProcessEnv): Promise<SshIdentity> {
  const dir = dstackSshDir(env);
  const privateKeyPath = join(dir, "id_rsa");
  const publicPath = `${privateKeyPath}.pub`;
  const pub = await readFile(publicPath, "utf8").catch(() => null);
  const priv = await readFile(privateKeyPath, "utf8").catch(() => null);
  if (pub?.trim() && priv) return { privateKeyPath, publicKey: pub.trim(), created: false };
  if (priv) {
    try {
      const { stdout } = await exec("ssh-keygen", ["-y", "-f", privateKeyPath]);
      await writeFile(publicPath, `${stdout.trim()}\n`, { mode: 0o644 });
      return { privateKeyPath, publicKey: stdout.trim(), created: false };
    } catch (e) {
      throw new CliError(`${privateKeyPath} has no ${publicPath} and it could not be derived (${(e as Error).message.split("\n")[0]}). Remove both to get a new key.`);
    }
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // A half-made key from an interrupted run: ssh-keygen would ask before overwriting.
  await rm(publicPath, { force: true });
  const comment = keyComment();
  let made = false;
  try {
    await exec("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", privateKeyPath]);
    made = true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw new CliError(`ssh-keygen could not make ${privateKeyPath}: ${(e as Error).message.split("\n")[0]}`);
  }
  if (!made) {
    const key = generateEd25519(comment);
    // Write beside and rename, so a reader never sees half a key.
    const tmp = `${privateKeyPath}.${process.pid}.tmp`;
    await writeFile(tmp, key.privateKey, { mode: 0o600 });
    await writeFile(publicPath, `${key.publicKey}\n`, { mode: 0o644 });
    await rename(tmp, privateKeyPath);
  }
  await chmod(privateKeyPath, 0o600);
  const publicKey = (await readFile(publicPath, "utf8")).trim();
  return { privateKeyPath, publicKey, created: true };
}

// ---- OpenSSH key format (PROTOCOL.key), ed25519 only ----

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

function sshString(data: Buffer | string): Buffer {
  const b = typeof data === "string" ? Buffer.from(data) : data;
  return Buffer.concat([u32(b.length), b]);
}

/** A new ed25519 key: the `openssh-key-v1` private key (unencrypted) and the public line. */
export function generateEd25519(comment: string): { privateKey: string; publicKey: string } {
  const { privateKey } = generateKeyPairSync("ed25519");
  const jwk = privateKey.export({ format: "jwk" });
  const seed = Buffer.from(jwk.d!, "base64url");
  const pk = Buffer.from(jwk.x!, "base64url");
  const publicBlob = Buffer.concat([sshString("ssh-ed25519"), sshString(pk)]);
  const check = randomBytes(4);
  let secret = Buffer.concat([check, check, sshString("ssh-ed25519"), sshString(pk), sshString(Buffer.concat([seed, pk])), sshString(comment)]);
  // Padded to the cipher block size ("none": 8) with 1, 2, 3…
  const pad = (8 - (secret.length % 8)) % 8;
  secret = Buffer.concat([secret, Buffer.from(Array.from({ length: pad }, (_, i) => i + 1))]);
  const body = Buffer.concat([
    Buffer.from("openssh-key-v1\0"),
    sshString("none"),
    sshString("none"),
    sshString(""),
    u32(1),
    sshString(publicBlob),
    sshString(secret),
  ]);
  const lines = body.toString("base64").match(/.{1,70}/g) ?? [];
  return {
    privateKey: `-----BEGIN OPENSSH PRIVATE KEY-----\n${lines.join("\n")}\n-----END OPENSSH PRIVATE KEY-----\n`,
    publicKey: `ssh-ed25519 ${publicBlob.toString("base64")} ${comment}`,
  };
}
