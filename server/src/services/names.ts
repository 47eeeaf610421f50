// Name rules shared by users, projects and secrets; checked before touching the DB so the
// error says what a valid name looks like.
import { err } from "../errors.js";

const RULES = {
  user: { re: /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/, max: 100, allowed: "letters, digits, '-', '_' or '.', starting with a letter or digit" },
  project: { re: /^[A-Za-z0-9][A-Za-z0-9_-]{0,49}$/, max: 50, allowed: "letters, digits, '-' or '_', starting with a letter or digit" },
  // Secrets are referenced as ${{ secrets.NAME }} and often exported as env variables.
  secret: { re: /^[A-Za-z_][A-Za-z0-9_-]{0,199}$/, max: 200, allowed: "letters, digits, '-' or '_', not starting with a digit" },
} as const;

export function checkName(kind: keyof typeof RULES, name: string): string {
  const rule = RULES[kind];
  if (!rule.re.test(name)) throw err("DSTACK_INVALID_NAME", { kind, name, max: rule.max, allowed: rule.allowed });
  return name;
}

/** Deleted rows keep their history but give their name back. */
export function tombstoneName(name: string, id: string): string {
  return `${name}~deleted~${id.slice(0, 8)}`;
}
