#!/bin/sh
# azd preprovision hook: make sure the azd environment has a decision-link signing key.
# The key is generated once (256 random bits, hex) and kept in the azd environment, so every
# `azd provision` writes the same value to Key Vault. Rotate with:
#   azd env set HITL_LINK_SIGNING_KEYS "<new-key>,<old-key>" && azd provision
set -eu
if [ -z "${HITL_LINK_SIGNING_KEYS:-}" ]; then
  if command -v openssl >/dev/null 2>&1; then
    key="$(openssl rand -hex 32)"
  else
    key="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
  fi
  azd env set HITL_LINK_SIGNING_KEYS "$key"
  echo "Generated HITL_LINK_SIGNING_KEYS for this azd environment."
fi
