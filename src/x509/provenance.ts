/**
 * Which signing CA certificate produced a certificate in this process. LeafSigner and LeafSignerPool record every
 * DER they return; validate.ts uses it to skip re-verifying a signature it knows was made moments ago with the
 * issuer's own key (the signer proved key and certificate match when it was given the CA). Keys are the exact
 * Buffer objects handed out, held weakly, so the map never grows past the certificates still in use.
 */
const issuedBy = new WeakMap<Buffer, Buffer>();

export function noteIssuedBy(certDer: Buffer, caCertDer: Buffer): void {
  issuedBy.set(certDer, caCertDer);
}

/** The CA certificate DER that signed `certDer` in this process, if a meshca signer made this exact Buffer. */
export function issuedInProcessBy(certDer: Buffer): Buffer | undefined {
  return issuedBy.get(certDer);
}
