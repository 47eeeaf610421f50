// The last lines a container printed: what a failed task's termination message shows.
import type Docker from "dockerode";

/**
 * Docker multiplexes a non-TTY container's output: frames of an 8-byte header (stream byte, three
 * zero bytes, big-endian uint32 size) then the payload. Returns the payloads in order.
 */
export function demuxDockerStream(buf: Buffer): string {
  const parts: Buffer[] = [];
  let off = 0;
  while (off + 8 <= buf.length) {
    const size = buf.readUInt32BE(off + 4);
    parts.push(buf.subarray(off + 8, off + 8 + size));
    off += 8 + size;
  }
  // A TTY container's log is raw; a buffer that does not parse as frames is kept as is.
  return off === buf.length ? Buffer.concat(parts).toString("utf8") : buf.toString("utf8");
}

/** The last `n` non-empty lines of stdout and stderr together; "" when they cannot be read. */
export async function lastLogLines(container: Docker.Container, n = 5): Promise<string> {
  try {
    const raw = (await container.logs({ stdout: true, stderr: true, follow: false, tail: n })) as unknown;
    const buf = Buffer.isBuffer(raw) ? raw : Buffer.from(String(raw));
    return demuxDockerStream(buf)
      .split("\n")
      .map((l) => l.replace(/\r$/, ""))
      .filter((l) => l.trim() !== "")
      .slice(-n)
      .join("\n");
  } catch {
    return "";
  }
}
