import os from "node:os";
import { describe, expect, it } from "vitest";
import { forwardHost, isLocalAddress } from "./forward.js";

describe("forwardHost", () => {
  const host = { containerId: "c", networkMode: "host" as const };
  const bridge = { containerId: "c", networkMode: "bridge" as const, containerIp: "172.17.0.5" };

  it("sends loopback to the host's loopback under host networking", () => {
    expect(forwardHost("localhost", host)).toBe("127.0.0.1");
    expect(forwardHost("127.0.0.1", host)).toBe("127.0.0.1");
    expect(forwardHost("::1", host)).toBe("::1");
  });

  it("sends loopback to the container's IP under bridge networking", () => {
    expect(forwardHost("localhost", bridge)).toBe("172.17.0.5");
    expect(forwardHost("127.0.0.2", bridge)).toBe("172.17.0.5");
    expect(forwardHost("localhost", { containerId: "c", networkMode: "bridge" })).toBeUndefined();
  });

  it("dials other destinations as named", () => {
    expect(forwardHost("10.1.2.3", bridge)).toBe("10.1.2.3");
    expect(forwardHost("example.com", host)).toBe("example.com");
  });
});

describe("isLocalAddress", () => {
  it("knows loopback, the hostname and interface addresses, and nothing else", () => {
    expect(isLocalAddress("127.0.0.1")).toBe(true);
    expect(isLocalAddress("[::1]")).toBe(true);
    expect(isLocalAddress(os.hostname())).toBe(true);
    const iface = Object.values(os.networkInterfaces()).flat().find((a) => a && !a.internal);
    if (iface) expect(isLocalAddress(iface.address)).toBe(true);
    expect(isLocalAddress("shim.example", ["shim.example"])).toBe(true);
    expect(isLocalAddress("192.0.2.1")).toBe(false);
  });
});
