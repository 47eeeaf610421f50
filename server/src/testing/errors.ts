import { isDstackError } from "../errors.js";

/** Awaits `p` and returns the DstackError code it failed with, or "ok"; other errors are rethrown. */
export async function errorCode(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (isDstackError(e)) return e.code;
    throw e;
  }
  return "ok";
}
