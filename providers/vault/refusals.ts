import { CaError, invalidArgument } from '../../src/util/errors.js';

/**
 * Turns Vault's 400 text for a refused leaf (`<pkiMount>/sign/<role>`) into meshca's error. A role that is set up
 * wrong refuses every leaf alike, so that is FAILED_PRECONDITION naming the role setting to change (the gotchas in
 * providers/vault/README.md); a SPIFFE ID outside the role's allowed_uri_sans, or anything else about this one
 * request, is the workload's INVALID_ARGUMENT naming the ID.
 */
export function leafRefusal(text: string, o: { role: string; pkiMount: string; path: string; spiffeId: string }): CaError {
  const vault = `(Vault: ${text})`;
  const misconfigured = (what: string): CaError => new CaError('FAILED_PRECONDITION', `vault: role ${o.role} ${what}`, { retryable: false });
  if (/^unknown role\b/i.test(text)) return misconfigured(`does not exist on ${o.pkiMount} ${vault}; check authority.vault.role and the mount`);
  if (/role requires keys of type/i.test(text)) return misconfigured(`refuses meshca's key ${vault}; set key_type=any on the role`);
  if (/common_name field is required/i.test(text)) return misconfigured(`requires a common name ${vault}; set require_cn=false on the role (SVIDs carry no CN)`);
  if (/URI Subject Alternative Name/i.test(text)) {
    return invalidArgument(`vault: role ${o.role} does not allow URI SAN ${o.spiffeId} ${vault}; add it to the role's allowed_uri_sans`);
  }
  return invalidArgument(`vault: ${o.path} refused ${o.spiffeId}: ${text}`);
}
