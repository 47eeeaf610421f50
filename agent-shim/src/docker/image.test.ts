import { describe, expect, it } from "vitest";
import { imageRegistry, imageTag, mustPull, PullTracker } from "./image.js";

describe("image references and pull progress", () => {
  it("reads the tag; none means latest; a digest has none", () => {
    expect(imageTag("ubuntu")).toBe("latest");
    expect(imageTag("ubuntu:22.04")).toBe("22.04");
    expect(imageTag("localhost:5000/a/b")).toBe("latest");
    expect(imageTag("localhost:5000/a/b:v1")).toBe("v1");
    expect(imageTag("a/b@sha256:abc")).toBe("");
    expect(imageRegistry("ghcr.io/x/y:1")).toBe("ghcr.io");
    expect(imageRegistry("localhost:5000/y")).toBe("localhost:5000");
    expect(imageRegistry("library/ubuntu")).toBe("");
  });

  it("pulls when missing, or when the tag is latest", () => {
    expect(mustPull("a:1", true)).toBe(false);
    expect(mustPull("a:1", false)).toBe(true);
    expect(mustPull("a", true)).toBe(true);
    expect(mustPull("a:latest", true)).toBe(true);
    expect(mustPull("a@sha256:x", true)).toBe(false);
  });

  it("sums layer bytes; the total is final once every layer is sized", () => {
    const p = new PullTracker();
    p.update({ status: "Pulling from library/x", id: "latest" });
    p.update({ status: "Pulling fs layer", id: "l1" });
    p.update({ status: "Pulling fs layer", id: "l2" });
    p.update({ status: "Downloading", id: "l1", progressDetail: { current: 10, total: 100 } });
    expect(p.state).toMatchObject({ downloadedBytes: 10n, totalBytes: 100n, totalBytesFinal: false });
    p.update({ status: "Downloading", id: "l2", progressDetail: { current: 5, total: 50 } });
    expect(p.state.totalBytesFinal).toBe(true);
    p.update({ status: "Download complete", id: "l1" });
    p.update({ status: "Extracting", id: "l1", progressDetail: { current: 40, total: 100 } });
    expect(p.state).toMatchObject({ downloadedBytes: 105n, extractedBytes: 40n, totalBytes: 150n });
    p.update({ status: "Pull complete", id: "l1" });
    p.update({ status: "Pull complete", id: "l2" });
    expect(p.state).toMatchObject({ downloadedBytes: 150n, extractedBytes: 150n, totalBytes: 150n, totalBytesFinal: true });
  });
});
