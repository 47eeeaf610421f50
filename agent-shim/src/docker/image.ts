// Image pulls: whether one is needed, progress folded into PullProgress, a deadline, and
// cancellation when the task is terminated mid-pull.
import type Docker from "dockerode";

/** The tag of an image reference; "latest" when none is given; "" for a digest reference. */
export function imageTag(ref: string): string {
  if (ref.includes("@")) return "";
  const slash = ref.lastIndexOf("/");
  const colon = ref.lastIndexOf(":");
  return colon > slash ? ref.slice(colon + 1) : "latest";
}

/** The registry host of a reference (for credentials), or "" for Docker Hub. */
export function imageRegistry(ref: string): string {
  const first = ref.split("/")[0] ?? "";
  return ref.includes("/") && (first.includes(".") || first.includes(":") || first === "localhost") ? first : "";
}

/** dstack's rule: a local image is used as is unless its tag is `latest` (a moving tag). */
export function mustPull(ref: string, presentLocally: boolean): boolean {
  return !presentLocally || imageTag(ref) === "latest";
}

export interface PullProgressState {
  downloadedBytes: bigint;
  extractedBytes: bigint;
  totalBytes: bigint;
  totalBytesFinal: boolean;
}

interface LayerState {
  total: number;
  downloaded: number;
  extracted: number;
  sized: boolean;
}

/** Docker's pull event stream (one JSON object per layer update), summed over layers. */
export class PullTracker {
  private readonly layers = new Map<string, LayerState>();

  update(ev: { id?: string; status?: string; progressDetail?: { current?: number; total?: number } }): void {
    const id = ev.id;
    const status = ev.status ?? "";
    // Lines without a layer id ("Pulling from …", "Digest: …", "Status: …") carry no bytes.
    if (!id || /^(Pulling from|Digest|Status)/.test(status)) return;
    const l = this.layers.get(id) ?? { total: 0, downloaded: 0, extracted: 0, sized: false };
    this.layers.set(id, l);
    const cur = ev.progressDetail?.current ?? 0;
    const tot = ev.progressDetail?.total ?? 0;
    if (status === "Already exists") {
      l.sized = true; // nothing to fetch for this layer
    } else if (status === "Downloading") {
      if (tot > 0) (l.total = tot), (l.sized = true);
      l.downloaded = cur;
    } else if (status === "Download complete" || status === "Verifying Checksum") {
      l.downloaded = l.total;
      l.sized = true;
    } else if (status === "Extracting") {
      if (tot > 0) (l.total = tot), (l.sized = true);
      l.downloaded = l.total;
      l.extracted = cur;
    } else if (status === "Pull complete") {
      l.downloaded = l.total;
      l.extracted = l.total;
      l.sized = true;
    }
  }

  get state(): PullProgressState {
    let d = 0, e = 0, t = 0, final = this.layers.size > 0;
    for (const l of this.layers.values()) {
      d += l.downloaded;
      e += l.extracted;
      t += l.total;
      if (!l.sized) final = false;
    }
    return { downloadedBytes: BigInt(d), extractedBytes: BigInt(e), totalBytes: BigInt(t), totalBytesFinal: final };
  }
}

export interface PullOptions {
  username?: string;
  password?: string;
  timeoutMs: number;
  signal: AbortSignal;
  onProgress?: (p: PullProgressState) => void;
}

/** 1200000 → "20 min", 1500 → "1.5 s". */
export function formatDuration(ms: number): string {
  return ms >= 60_000 && ms % 60_000 === 0 ? `${ms / 60_000} min` : `${Math.round(ms / 100) / 10} s`;
}

export class PullError extends Error {
  override name = "PullError";
}

function errorText(e: unknown): string {
  // dockerode puts the daemon's JSON answer in `json`; its message is the useful part.
  const j = (e as { json?: { message?: string } } | null)?.json;
  if (j && typeof j === "object" && typeof j.message === "string") return j.message;
  return e instanceof Error ? e.message : String(e);
}

/** Pulls `ref`; rejects with a PullError naming the image on failure, timeout or abort. */
export async function pullImage(docker: Docker, ref: string, o: PullOptions): Promise<void> {
  const tracker = new PullTracker();
  const ac = new AbortController();
  const onAbort = () => ac.abort(o.signal.reason);
  o.signal.addEventListener("abort", onAbort, { once: true });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    ac.abort(new Error("timeout"));
  }, o.timeoutMs);
  const fail = (why: string) => new PullError(`cannot pull image ${ref}: ${why}`);
  const timeoutText = `timed out after ${formatDuration(o.timeoutMs)} (the shim's pull timeout)`;
  try {
    if (o.signal.aborted) throw fail("the task was terminated");
    const auth = o.username || o.password ? { authconfig: { username: o.username ?? "", password: o.password ?? "", serveraddress: imageRegistry(ref) || "https://index.docker.io/v1/" } } : {};
    let stream: NodeJS.ReadableStream;
    try {
      stream = (await docker.pull(ref, { ...auth, abortSignal: ac.signal })) as NodeJS.ReadableStream;
    } catch (e) {
      if (timedOut) throw fail(timeoutText);
      if (o.signal.aborted) throw fail("the task was terminated");
      throw fail(errorText(e));
    }
    await new Promise<void>((resolve, reject) => {
      const stop = () => {
        (stream as unknown as { destroy?: () => void }).destroy?.();
        reject(timedOut ? fail(timeoutText) : fail("the task was terminated"));
      };
      if (ac.signal.aborted) return stop();
      ac.signal.addEventListener("abort", stop, { once: true });
      docker.modem.followProgress(
        stream,
        (err: Error | null, out: { error?: string; errorDetail?: { message?: string } }[]) => {
          ac.signal.removeEventListener("abort", stop);
          // The daemon reports a failed pull as an `error` line in an otherwise successful stream.
          const inStream = out?.find((x) => x.error)?.error;
          if (err || inStream) reject(fail(inStream ?? errorText(err)));
          else resolve();
        },
        (ev: Parameters<PullTracker["update"]>[0]) => {
          tracker.update(ev);
          o.onProgress?.(tracker.state);
        },
      );
    });
  } finally {
    clearTimeout(timer);
    o.signal.removeEventListener("abort", onAbort);
  }
}
