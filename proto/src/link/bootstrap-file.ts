// The runner's bootstrap file (`<task dir>/bootstrap.json`, mounted at /dstack/task): written by
// the shim from SubmitTaskCommand.runner, read by the runner at start. One definition for both.

/** `bootstrap.json`: how a job's runner reaches the server and proves it is that job. */
export interface RunnerBootstrapFile {
  /** One-time runner join token, bound to the job submission (the fallback to the issued identity). */
  joinToken: string;
  /** The server's agent port as the container reaches it, e.g. `https://127.0.0.1:3001`. */
  agentUrl: string;
  /** The server CA (PEM); its SHA-256 is the pin the runner checks. */
  caCertificatePem: string;
  /** TLS name to check when agentUrl names an address the server certificate does not list. */
  serverName?: string;
  /** The job's client certificate issued by the server (PEM): with privateKeyPem, used instead of enrolling. */
  certificatePem?: string;
  /** Its private key (PKCS#8 PEM); the file is 0600. */
  privateKeyPem?: string;
  /** When the certificate expires (ISO 8601). */
  notAfter?: string;
  /** When the runner should renew it (ISO 8601). */
  renewAfter?: string;
}
