# meshca, mode: intermediate — least privilege.
# meshca sends one CSR per signing-CA rotation to the root (or chosen) issuer of the "pki" mount.
# Adjust "pki" if authority.vault.pkiMount differs.

path "pki/root/sign-intermediate" {
  capabilities = ["update"]
}

# Reading the CA chain is unauthenticated in Vault; these rules only matter if your Vault restricts it.
path "pki/cert/ca_chain" {
  capabilities = ["read"]
}
path "pki/issuer/default/json" {
  capabilities = ["read"]
}

# lookup-self and renew-self come from Vault's built-in "default" policy; keep it attached to meshca's token.
