// Keyset paging by a unique name: the page token is an opaque encoding of the last name seen.
import { err } from "../errors.js";

export const DEFAULT_PAGE_LIMIT = 100;
export const MAX_PAGE_LIMIT = 1000;

export interface PageQuery {
  /** 0 or unset = DEFAULT_PAGE_LIMIT; capped at MAX_PAGE_LIMIT. */
  limit?: number;
  /** next_page_token of a previous page; empty = first page. */
  pageToken?: string;
}

export interface Page<T> {
  items: T[];
  /** Empty on the last page. */
  nextPageToken: string;
}

export function pageLimit(limit: number | undefined): number {
  return !limit || limit <= 0 ? DEFAULT_PAGE_LIMIT : Math.min(Math.floor(limit), MAX_PAGE_LIMIT);
}

export function encodeNameToken(name: string): string {
  return Buffer.from(JSON.stringify({ n: name })).toString("base64url");
}

/** The name after which the page starts, or null for the first page. */
export function decodeNameToken(token: string | undefined): string | null {
  if (!token) return null;
  try {
    const v = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { n?: unknown };
    if (typeof v?.n !== "string" || v.n === "") throw new Error("no name");
    return v.n;
  } catch {
    throw err("DSTACK_BAD_PAGE_TOKEN");
  }
}

/** `rows` were fetched with limit + 1; trims them and computes the next token. */
export function trimPage<R extends { name: string }>(rows: R[], limit: number): { rows: R[]; nextPageToken: string } {
  const more = rows.length > limit;
  const kept = more ? rows.slice(0, limit) : rows;
  const last = kept[kept.length - 1];
  return { rows: kept, nextPageToken: more && last ? encodeNameToken(last.name) : "" };
}
