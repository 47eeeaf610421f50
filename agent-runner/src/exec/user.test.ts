import { describe, expect, it } from "vitest";
import { resolveUser } from "./user.js";

const passwd = "root:x:0:0:root:/root:/bin/bash\n# comment\nubuntu:x:1000:1000::/home/ubuntu:/bin/bash\nbroken line\n";
const group = "root:x:0:\nubuntu:x:1000:\nvideo:x:44:ubuntu\n";
const root = { uid: 0, gid: 0 };

describe("job user", () => {
  it("is the runner's own user when the job names none", () => {
    expect(resolveUser(undefined, { passwd, group }, root)).toEqual({ uid: 0, gid: 0, username: "root", home: "/root" });
  });

  it("resolves a name through /etc/passwd and a group name through /etc/group", () => {
    expect(resolveUser({ username: "ubuntu" }, { passwd, group }, root)).toEqual({ uid: 1000, gid: 1000, username: "ubuntu", home: "/home/ubuntu" });
    expect(resolveUser({ username: "ubuntu", groupname: "video" }, { passwd, group }, root).gid).toBe(44);
  });

  it("accepts a bare uid without /etc/passwd (busybox, distroless)", () => {
    expect(resolveUser({ uid: 1234 }, { passwd: "", group: "" }, root)).toEqual({ uid: 1234, gid: 1234, username: "1234", home: "/" });
    expect(resolveUser({ uid: 1234, gid: 5 }, {}, root).gid).toBe(5);
    expect(resolveUser(undefined, {}, root)).toEqual({ uid: 0, gid: 0, username: "root", home: "/root" });
  });

  it("refuses names the image does not know, saying what to do", () => {
    expect(() => resolveUser({ username: "ghost" }, { passwd, group }, root)).toThrow(/user 'ghost' does not exist in the image.*numeric uid/);
    expect(() => resolveUser({ uid: 0, groupname: "nogroup" }, { passwd, group }, root)).toThrow(/group 'nogroup' does not exist/);
  });
});
