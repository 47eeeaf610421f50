// IPv4 networks of SSH fleet hosts: `ssh_config.network` picks, among a host's addresses, the
// one jobs use between nodes (DSTACK_NODES_IPS, the master's address); `placement: cluster`
// needs every host in one network.

export interface Cidr {
  base: number;
  prefix: number;
  text: string;
}

function ipToInt(ip: string): number | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip.trim());
  if (!m) return null;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return null;
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

const intToIp = (n: number): string => [24, 16, 8, 0].map((s) => (n >>> s) & 255).join(".");
const mask = (prefix: number): number => (prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0);

/** `10.0.0.0/24` → its network; null when it is not an IPv4 CIDR. */
export function parseCidr(text: string): Cidr | null {
  const [ip, p] = text.trim().split("/");
  const base = ipToInt(ip ?? "");
  const prefix = p !== undefined && /^\d{1,2}$/.test(p) ? Number(p) : NaN;
  if (base === null || !(prefix >= 0 && prefix <= 32)) return null;
  return { base: (base & mask(prefix)) >>> 0, prefix, text: `${intToIp((base & mask(prefix)) >>> 0)}/${prefix}` };
}

export function inCidr(ip: string, c: Cidr): boolean {
  const n = ipToInt(ip);
  return n !== null && ((n & mask(c.prefix)) >>> 0) === c.base;
}

const PRIVATE = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"].map((t) => parseCidr(t)!);

/** RFC 1918 (and carrier-grade NAT) space: what dstack accepts for `network` and `internal_ip`. */
export function isPrivateIp(ip: string): boolean {
  return PRIVATE.some((c) => inCidr(ip, c));
}

export function isPrivateCidr(c: Cidr): boolean {
  return PRIVATE.some((p) => p.prefix <= c.prefix && inCidr(intToIp(c.base), p));
}

/** `ip -o -4 addr show` lines → `10.0.0.5/24` entries (loopback left out). */
export function parseIpAddr(out: string): { ip: string; cidr: Cidr }[] {
  const found: { ip: string; cidr: Cidr }[] = [];
  for (const line of out.split("\n")) {
    const m = /\binet (\d+\.\d+\.\d+\.\d+)\/(\d+)/.exec(line);
    if (!m || m[1]!.startsWith("127.")) continue;
    const cidr = parseCidr(`${m[1]}/${m[2]}`);
    if (cidr) found.push({ ip: m[1]!, cidr });
  }
  return found;
}

/**
 * The address a host uses between nodes: `internal_ip` when the configuration names it, else the
 * host's address inside `network`, else its first private address. `net` is the network the
 * address belongs to (cluster placement compares them).
 */
export function pickInternalIp(
  addrs: { ip: string; cidr: Cidr }[],
  o: { internalIp?: string | undefined; network?: Cidr | undefined },
): { ip: string; net: string } | { error: string } {
  const list = addrs.map((a) => `${a.ip}/${a.cidr.prefix}`).join(", ") || "none";
  if (o.internalIp) {
    const own = addrs.find((a) => a.ip === o.internalIp);
    if (!own) return { error: `internal_ip ${o.internalIp} is not an address of the host (its addresses: ${list})` };
    return { ip: own.ip, net: o.network?.text ?? own.cidr.text };
  }
  if (o.network) {
    const a = addrs.find((x) => inCidr(x.ip, o.network!));
    if (!a) return { error: `no address of the host is in ssh_config.network ${o.network.text} (its addresses: ${list})` };
    return { ip: a.ip, net: o.network.text };
  }
  const a = addrs.find((x) => isPrivateIp(x.ip)) ?? addrs[0];
  if (!a) return { error: "the host has no IPv4 address besides loopback" };
  return { ip: a.ip, net: a.cidr.text };
}
