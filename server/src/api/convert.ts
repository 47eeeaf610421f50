// Service views → proto messages. Pure mapping, no decisions.
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ProjectSchema, PublicKeySchema, SecretSchema, UserSchema } from "@dstack/proto/api";
import type { ProjectView, PublicKeyView, SecretView, UserView } from "../services/index.js";

export function userMessage(u: UserView): MessageInitShape<typeof UserSchema> {
  return {
    id: u.id,
    username: u.name,
    globalRole: u.globalRole,
    email: u.email ?? "",
    active: u.active,
    createdAt: timestampFromDate(u.createdAt),
    sshPublicKey: u.sshPublicKey ?? "",
  };
}

export function publicKeyMessage(k: PublicKeyView): MessageInitShape<typeof PublicKeySchema> {
  return { id: k.id, name: k.name, type: k.type, fingerprint: k.fingerprint, key: k.key, addedAt: timestampFromDate(k.addedAt) };
}

/** Owners and members carry only their names: other users' details stay with UserService. */
export function projectMessage(p: ProjectView): MessageInitShape<typeof ProjectSchema> {
  return {
    id: p.id,
    name: p.name,
    owner: { username: p.ownerName },
    createdAt: timestampFromDate(p.createdAt),
    members: p.members.map((m) => ({ user: { username: m.userName }, projectRole: m.projectRole })),
    isPublic: p.isPublic,
  };
}

/** Never carries the value: secrets are write-only through the API. */
export function secretMessage(s: SecretView): MessageInitShape<typeof SecretSchema> {
  return { name: s.name, createdAt: timestampFromDate(s.createdAt), updatedAt: timestampFromDate(s.updatedAt) };
}
