// Keys, certificate signing requests and certificates for the agent mesh, on Node's crypto
// plus the DER codec beside this file. ECDSA P-256 with SHA-256 throughout: every TLS stack the
// agents and the server use (Node, grpc-js, Go, Python) accepts it for both ends.
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, verify, X509Certificate, type KeyObject } from "node:crypto";
import { isIP } from "node:net";
import { bits, bool, children, explicit, implicit, int, octets, oid, read, seq, set, time, uint, utf8, type Der } from "./der.js";

const OID = {
  ecdsaSha256: "1.2.840.10045.4.3.2",
  commonName: "2.5.4.3",
  organization: "2.5.4.10",
  organizationalUnit: "2.5.4.11",
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  subjectAltName: "2.5.29.17",
  subjectKeyId: "2.5.29.14",
  authorityKeyId: "2.5.29.35",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
} as const;

const sigAlg = (): Der => seq(oid(OID.ecdsaSha256));

export interface KeyPair {
  privateKeyPem: string;
  publicKey: KeyObject;
}

/** A fresh ECDSA P-256 key; the private half as PKCS#8 PEM. */
export function generateKey(): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return { privateKeyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(), publicKey };
}

export interface DistinguishedName {
  commonName: string;
  organization?: string;
  organizationalUnit?: string;
}

function name(dn: DistinguishedName): Der {
  const rdns: Der[] = [];
  if (dn.organization) rdns.push(set(seq(oid(OID.organization), utf8(dn.organization))));
  if (dn.organizationalUnit) rdns.push(set(seq(oid(OID.organizationalUnit), utf8(dn.organizationalUnit))));
  rdns.push(set(seq(oid(OID.commonName), utf8(dn.commonName))));
  return seq(...rdns);
}

function spki(key: KeyObject): Buffer {
  return key.export({ type: "spki", format: "der" });
}

/** RFC 5280 method 1: SHA-1 of the subjectPublicKey bits (an identifier, not a security property). */
function keyId(key: KeyObject): Buffer {
  const subjectPublicKey = children(read(spki(key)))[1]!.body.subarray(1);
  return createHash("sha1").update(subjectPublicKey).digest();
}

const pem = (label: string, der: Uint8Array): string =>
  `-----BEGIN ${label}-----\n${Buffer.from(der).toString("base64").replace(/.{64}/g, "$&\n").replace(/\n?$/, "\n")}-----END ${label}-----\n`;

function unpem(label: string, text: string): Buffer {
  const m = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`).exec(text);
  if (!m) throw new Error(`not a PEM ${label.toLowerCase()}`);
  return Buffer.from(m[1]!.replace(/\s+/g, ""), "base64");
}

/** A PKCS#10 request for `key`, PEM. The server ignores the subject: it names the agent itself. */
export function createCsr(privateKeyPem: string, subject: DistinguishedName = { commonName: "dstack-agent" }): string {
  const priv = createPrivateKey(privateKeyPem);
  const info = seq(int(0), name(subject), spki(createPublicKey(priv)), tlv0());
  return pem("CERTIFICATE REQUEST", seq(info, sigAlg(), bits(sign("sha256", info, priv))));
}
const tlv0 = (): Der => Buffer.from([0xa0, 0x00]); // [0] attributes, empty

/** The public key of a PEM CSR, after checking the request is signed by that key. */
export function parseCsr(csrPem: string): KeyObject {
  let der: Buffer;
  try {
    der = unpem("CERTIFICATE REQUEST", csrPem);
    const [info, , sig] = children(read(der));
    if (!info || !sig) throw new Error("malformed");
    const parts = children(info);
    const key = createPublicKey({ key: parts[2]!.raw, format: "der", type: "spki" });
    if (key.asymmetricKeyType !== "ec" && key.asymmetricKeyType !== "ed25519") throw new Error(`unsupported key type ${key.asymmetricKeyType}`);
    const ok = verify(key.asymmetricKeyType === "ed25519" ? null : "sha256", info.raw, key, sig.body.subarray(1));
    if (!ok) throw new Error("signature does not match its key");
    return key;
  } catch (e) {
    throw new Error(`invalid CSR: ${e instanceof Error ? e.message : String(e)}`);
  }
}

export interface IssueOptions {
  subject: DistinguishedName;
  subjectKey: KeyObject;
  issuer: { certPem: string; privateKeyPem: string } | "self";
  /** Signing key when self-signed. */
  selfKeyPem?: string;
  notBefore: Date;
  notAfter: Date;
  ca?: boolean;
  usage?: ("server" | "client")[];
  dns?: string[];
  ips?: string[];
  uris?: string[];
}

function ipBytes(ip: string): Buffer {
  if (isIP(ip) === 4) return Buffer.from(ip.split(".").map(Number));
  // IPv6: expand "::" then pack 8 groups.
  const [head, tail] = ip.split("::") as [string, string | undefined];
  const h = head ? head.split(":") : [];
  const t = tail !== undefined && tail !== "" ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill("0"), ...t];
  return Buffer.from(groups.map((g) => g.padStart(4, "0")).join(""), "hex");
}

/** The issuer's parsed key, name and key id, kept for the last issuer: a CA signs thousands of leaves. */
let lastIssuer: { certPem: string; privateKeyPem: string; signer: KeyObject; name: Buffer; keyId: Buffer } | null = null;
function issuerOf(i: { certPem: string; privateKeyPem: string }) {
  if (lastIssuer?.certPem !== i.certPem || lastIssuer.privateKeyPem !== i.privateKeyPem) {
    const cert = new X509Certificate(i.certPem);
    lastIssuer = { ...i, signer: createPrivateKey(i.privateKeyPem), name: tbsField(cert, 5), keyId: Buffer.from(keyId(cert.publicKey)) };
  }
  return lastIssuer;
}

/** Signs a certificate. Returns PEM. */
export function issueCertificate(o: IssueOptions): string {
  const self = o.issuer === "self";
  const ca = self ? undefined : issuerOf(o.issuer as { certPem: string; privateKeyPem: string });
  const signer = ca ? ca.signer : createPrivateKey(o.selfKeyPem!);
  const issuerName = ca ? ca.name : name(o.subject);
  const ext = (id: string, critical: boolean, value: Der): Der => seq(oid(id), ...(critical ? [bool(true)] : []), octets(value));
  const exts: Der[] = [
    ext(OID.basicConstraints, true, o.ca ? seq(bool(true)) : seq()),
    // keyUsage bits: digitalSignature(0) for leaves; keyCertSign(5) + cRLSign(6) for the CA.
    ext(OID.keyUsage, true, o.ca ? Buffer.from([0x03, 0x02, 0x01, 0x06]) : Buffer.from([0x03, 0x02, 0x07, 0x80])),
    ext(OID.subjectKeyId, false, octets(keyId(o.subjectKey))),
    ext(OID.authorityKeyId, false, seq(implicit(0, ca ? ca.keyId : keyId(o.subjectKey)))),
  ];
  if (o.usage?.length) {
    exts.push(ext(OID.extKeyUsage, false, seq(...o.usage.map((u) => oid(u === "server" ? OID.serverAuth : OID.clientAuth)))));
  }
  const san: Der[] = [
    ...(o.dns ?? []).map((d) => implicit(2, Buffer.from(d, "ascii"))),
    ...(o.ips ?? []).map((ip) => implicit(7, ipBytes(ip))),
    ...(o.uris ?? []).map((u) => implicit(6, Buffer.from(u, "ascii"))),
  ];
  if (san.length) exts.push(ext(OID.subjectAltName, false, seq(...san)));
  const serial = randomBytes(16);
  serial[0] = serial[0]! & 0x7f; // positive, at most 20 octets
  const tbs = seq(
    explicit(0, int(2)),
    uint(serial),
    sigAlg(),
    issuerName,
    seq(time(o.notBefore), time(o.notAfter)),
    name(o.subject),
    spki(o.subjectKey),
    explicit(3, seq(...exts)),
  );
  return pem("CERTIFICATE", seq(tbs, sigAlg(), bits(sign("sha256", tbs, signer))));
}

/** The raw DER of field `i` of a certificate's TBSCertificate (5 = subject). */
function tbsField(cert: X509Certificate, i: number): Buffer {
  const tbs = children(read(Buffer.from(cert.raw)))[0]!;
  return children(tbs)[i]!.raw;
}

/** SHA-256 of the certificate's DER, lowercase hex (what `openssl x509 -fingerprint -sha256` shows, without colons). */
export function certificateFingerprint(certPem: string): string {
  return createHash("sha256").update(new X509Certificate(certPem).raw).digest("hex");
}

/** Accepts `sha256:AB:CD…`, `AB:CD…` or plain hex; returns lowercase hex. */
export function normalizeFingerprint(fp: string): string {
  return fp.trim().replace(/^sha256:/i, "").replace(/:/g, "").toLowerCase();
}

/** Splits a PEM bundle into its certificates. */
export function splitPem(bundle: string): string[] {
  return bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g) ?? [];
}
