// Unpacks code tarballs and `files:` archives with the `tar` package: the user's image may have
// no tar at all. gzip is detected from the content; plain tar works too.
import { mkdirSync } from "node:fs";
import * as tar from "tar";

export interface ExtractOptions {
  /** Owner for the extracted files (the job user); default: the runner's own user. */
  uid?: number;
  gid?: number;
  /** Entries tar skipped or changed (absolute paths, unsupported types), for the runner log. */
  onWarn?(message: string): void;
}

export async function extractArchive(file: string, dest: string, o: ExtractOptions = {}): Promise<void> {
  mkdirSync(dest, { recursive: true });
  await tar.x({
    file,
    cwd: dest,
    // Archives come from a user's laptop: their uids mean nothing here.
    preserveOwner: false,
    ...(o.uid !== undefined && o.gid !== undefined ? { uid: o.uid, gid: o.gid } : {}),
    onwarn: (_code: string, message: string | Error) => o.onWarn?.(String(message instanceof Error ? message.message : message)),
  });
}
