import { describe, expect, it } from "vitest";
import { inCidr, isPrivateCidr, isPrivateIp, parseCidr, parseIpAddr, pickInternalIp } from "./network.js";

// Real `ip -o -4 addr show` output of a host with two private networks and Docker's bridge.
const IP_ADDR = [
  "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever",
  "2: eth0    inet 203.0.113.7/24 brd 203.0.113.255 scope global eth0\\       valid_lft forever preferred_lft forever",
  "3: eth1    inet 10.0.3.15/24 brd 10.0.3.255 scope global eth1\\       valid_lft forever preferred_lft forever",
  "4: ib0    inet 192.168.50.4/23 brd 192.168.51.255 scope global ib0\\       valid_lft forever preferred_lft forever",
  "5: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\\       valid_lft forever preferred_lft forever",
].join("\n");

describe("SSH host networks", () => {
  it("parses CIDRs to their network and checks membership", () => {
    expect(parseCidr("10.0.3.77/24")?.text).toBe("10.0.3.0/24");
    expect(parseCidr("10.0.0.0/33")).toBeNull();
    expect(parseCidr("10.0.0/24")).toBeNull();
    expect(parseCidr("fd00::/8")).toBeNull();
    const net = parseCidr("192.168.50.0/23")!;
    expect(inCidr("192.168.51.200", net)).toBe(true);
    expect(inCidr("192.168.52.1", net)).toBe(false);
    expect(inCidr("0.0.0.0", parseCidr("0.0.0.0/0")!)).toBe(true);
  });

  it("knows private space", () => {
    expect(isPrivateIp("10.1.2.3")).toBe(true);
    expect(isPrivateIp("172.31.255.1")).toBe(true);
    expect(isPrivateIp("172.32.0.1")).toBe(false);
    expect(isPrivateIp("8.8.8.8")).toBe(false);
    expect(isPrivateCidr(parseCidr("10.0.0.0/24")!)).toBe(true);
    expect(isPrivateCidr(parseCidr("10.0.0.0/7")!)).toBe(false);
    expect(isPrivateCidr(parseCidr("203.0.113.0/24")!)).toBe(false);
  });

  it("reads `ip -o -4 addr show` without loopback", () => {
    expect(parseIpAddr(IP_ADDR).map((a) => `${a.ip} ${a.cidr.text}`)).toEqual(["203.0.113.7 203.0.113.0/24", "10.0.3.15 10.0.3.0/24", "192.168.50.4 192.168.50.0/23", "172.17.0.1 172.17.0.0/16"]);
  });

  it("picks internal_ip, else the address in `network`, else the first private one", () => {
    const addrs = parseIpAddr(IP_ADDR);
    expect(pickInternalIp(addrs, {})).toEqual({ ip: "10.0.3.15", net: "10.0.3.0/24" });
    expect(pickInternalIp(addrs, { network: parseCidr("192.168.50.0/23")! })).toEqual({ ip: "192.168.50.4", net: "192.168.50.0/23" });
    expect(pickInternalIp(addrs, { internalIp: "192.168.50.4" })).toEqual({ ip: "192.168.50.4", net: "192.168.50.0/23" });
    expect(pickInternalIp(addrs, { network: parseCidr("10.9.0.0/16")! })).toEqual({
      error: "no address of the host is in ssh_config.network 10.9.0.0/16 (its addresses: 203.0.113.7/24, 10.0.3.15/24, 192.168.50.4/23, 172.17.0.1/16)",
    });
    expect(pickInternalIp(addrs, { internalIp: "10.0.3.99" })).toEqual({
      error: "internal_ip 10.0.3.99 is not an address of the host (its addresses: 203.0.113.7/24, 10.0.3.15/24, 192.168.50.4/23, 172.17.0.1/16)",
    });
    expect(pickInternalIp([], {})).toEqual({ error: "the host has no IPv4 address besides loopback" });
  });
});
