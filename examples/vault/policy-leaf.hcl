# meshca, mode: leaf — least privilege.
# meshca sends every workload CSR to <pkiMount>/sign/<role>. Nothing else: no issue (Vault would create keys),
# no sign-verbatim, no root or intermediate endpoints. Adjust "pki_int" and "meshca" to your pkiMount and role.

path "pki_int/sign/meshca" {
  capabilities = ["update"]
}

path "pki_int/cert/ca_chain" {
  capabilities = ["read"]
}
path "pki_int/issuer/default/json" {
  capabilities = ["read"]
}

# lookup-self and renew-self come from Vault's built-in "default" policy; keep it attached to meshca's token.
