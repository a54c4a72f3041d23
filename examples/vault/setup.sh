#!/usr/bin/env bash
# Sets up Vault PKI for meshca: a root mount (intermediate mode) and an intermediate mount with a SPIFFE role
# (leaf mode), least-privilege policies, and AppRole / Kubernetes logins. Needs the `vault` CLI, VAULT_ADDR and a
# token allowed to mount engines, write policies and configure auth (e.g. an admin token). Idempotent enough to
# re-run except for `secrets enable` / `auth enable`, which fail when the mount exists (ignored below).
set -euo pipefail
TD="${TRUST_DOMAIN:-example.org}"
HERE="$(cd "$(dirname "$0")" && pwd)"

# 1. Root CA mount "pki" (10 years). In production the root often lives elsewhere; then import it instead.
vault secrets enable -path=pki pki 2>/dev/null || true
vault secrets tune -max-lease-ttl=87600h pki
vault write -field=certificate pki/root/generate/internal \
  common_name="${TD} root CA" ttl=87600h key_type=ec key_bits=256 > root-ca.pem
echo "root fingerprint (authority.vault.rootFingerprint):"
openssl x509 -in root-ca.pem -noout -fingerprint -sha256 | cut -d= -f2

# 2. Intermediate mount "pki_int" for leaf mode, signed by the root.
vault secrets enable -path=pki_int pki 2>/dev/null || true
vault secrets tune -max-lease-ttl=43800h pki_int
vault write -field=csr pki_int/intermediate/generate/internal \
  common_name="${TD} Vault intermediate" key_type=ec key_bits=256 > pki_int.csr
vault write -field=certificate pki/root/sign-intermediate csr=@pki_int.csr \
  format=pem_bundle ttl=43800h > pki_int.pem
vault write pki_int/intermediate/set-signed certificate=@pki_int.pem

# 3. The SPIFFE role for leaf mode: URI SANs in the trust domain only, no CN, any key type, CA:false stated,
#    no DNS names unless you add allowed_domains. no_store=true skips a storage write per certificate
#    (throughput; see hashicorp/vault#2511) at the cost of listing/revoking by serial.
vault write pki_int/roles/meshca \
  allowed_uri_sans="spiffe://${TD}/*" \
  require_cn=false \
  key_type=any \
  basic_constraints_valid_for_non_ca=true \
  allow_any_name=false allowed_domains="" allow_subdomains=false enforce_hostnames=true \
  server_flag=true client_flag=true \
  key_usage="DigitalSignature,KeyAgreement,KeyEncipherment" \
  use_csr_sans=false use_csr_common_name=false allow_ip_sans=false \
  ttl=1h max_ttl=24h not_before_duration=30s \
  no_store=true generate_lease=false

# 4. Policies (least privilege per mode).
vault policy write meshca-intermediate "${HERE}/policy-intermediate.hcl"
vault policy write meshca-leaf "${HERE}/policy-leaf.hcl"

# 5a. AppRole login (pick the policy for your mode).
vault auth enable approle 2>/dev/null || true
vault write auth/approle/role/meshca token_policies=meshca-leaf token_ttl=1h token_max_ttl=24h \
  secret_id_ttl=0 token_type=service
vault read -field=role_id auth/approle/role/meshca/role-id > role-id
vault write -f -field=secret_id auth/approle/role/meshca/secret-id > secret-id
chmod 600 secret-id

# 5b. Kubernetes login (meshca running in-cluster as ServiceAccount meshca in namespace meshca, as
#     examples/kubernetes/base.yaml deploys it).
vault auth enable kubernetes 2>/dev/null || true
vault write auth/kubernetes/config kubernetes_host="https://${KUBERNETES_SERVICE_HOST:-kubernetes.default.svc}:443"
vault write auth/kubernetes/role/meshca \
  bound_service_account_names=meshca bound_service_account_namespaces=meshca \
  token_policies=meshca-intermediate token_ttl=1h token_max_ttl=24h

echo "done: use meshca-intermediate.yaml or meshca-leaf.yaml"
