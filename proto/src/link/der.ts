// Just enough ASN.1 DER to write and read PKCS#10 requests and X.509 certificates.
// Node's crypto signs and verifies but cannot build either structure, and the runner must work in
// images without an openssl binary, so both sides share this small codec instead of a dependency.

export type Der = Uint8Array;

function length(n: number): number[] {
  if (n < 0x80) return [n];
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return [0x80 | bytes.length, ...bytes];
}

/** One TLV with the given tag byte. */
export function tlv(tag: number, ...content: Der[]): Der {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag, ...length(body.length)]), body]);
}

export const seq = (...items: Der[]): Der => tlv(0x30, ...items);
export const set = (...items: Der[]): Der => tlv(0x31, ...items);
export const octets = (b: Uint8Array): Der => tlv(0x04, b);
export const utf8 = (s: string): Der => tlv(0x0c, Buffer.from(s, "utf8"));
export const bool = (v: boolean): Der => tlv(0x01, Buffer.from([v ? 0xff : 0]));
export const nullValue = (): Der => Buffer.from([0x05, 0x00]);
/** BIT STRING with no unused bits. */
export const bits = (b: Uint8Array): Der => tlv(0x03, Buffer.from([0]), b);
/** [n] EXPLICIT (constructed context tag). */
export const explicit = (n: number, inner: Der): Der => tlv(0xa0 | n, inner);
/** [n] IMPLICIT primitive (e.g. SAN dNSName, iPAddress, URI). */
export const implicit = (n: number, raw: Uint8Array): Der => tlv(0x80 | n, raw);

/** Unsigned big-endian integer bytes as a DER INTEGER (a leading zero keeps it positive). */
export function uint(bytes: Uint8Array): Der {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  let b = Buffer.from(bytes.subarray(i));
  if ((b[0] ?? 0) & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
  return tlv(0x02, b);
}
export function int(n: number): Der {
  const hex = n.toString(16);
  return uint(Buffer.from(hex.length % 2 ? "0" + hex : hex, "hex"));
}

export function oid(dotted: string): Der {
  const parts = dotted.split(".").map(Number);
  const out: number[] = [40 * parts[0]! + parts[1]!];
  for (const p of parts.slice(2)) {
    const chunk: number[] = [p & 0x7f];
    for (let v = Math.floor(p / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift(0x80 | (v & 0x7f));
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

/** UTCTime until 2049, GeneralizedTime after, as RFC 5280 requires. */
export function time(d: Date): Der {
  const iso = d.toISOString().replace(/[-:T]/g, "").slice(0, 14) + "Z"; // YYYYMMDDHHMMSSZ
  const year = d.getUTCFullYear();
  return year < 2050 ? tlv(0x17, Buffer.from(iso.slice(2), "ascii")) : tlv(0x18, Buffer.from(iso, "ascii"));
}

/** A parsed TLV: `raw` is the whole element, `body` its content. */
export interface Node {
  tag: number;
  raw: Buffer;
  body: Buffer;
}

/** Reads one element at `offset`. Throws on truncated or indefinite-length input. */
export function read(buf: Buffer, offset = 0): Node {
  const tag = buf[offset];
  let len = buf[offset + 1];
  if (tag === undefined || len === undefined) throw new Error("DER: truncated");
  let start = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new Error("DER: unsupported length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (buf[start + i] ?? 0);
    start += n;
  }
  if (start + len > buf.length) throw new Error("DER: truncated");
  return { tag, raw: buf.subarray(offset, start + len), body: buf.subarray(start, start + len) };
}

/** The children of a constructed element. */
export function children(node: Node): Node[] {
  const out: Node[] = [];
  for (let off = 0; off < node.body.length; ) {
    const child = read(node.body, off);
    out.push(child);
    off += child.raw.length;
  }
  return out;
}
