"""Schemathesis hooks for ihub's contract run (.ci/contract): each call gets the credentials
`ihub dev` uses, and a signed body is signed as the hub expects, so generated requests reach
the handlers instead of stopping at 401."""

import hashlib
import hmac
import json
import time

import schemathesis

BEARER = {
    "/max/": "dev-max-token",
    "/admin/": "dev-admin-token",
    "/newstore/": "dev-admin-token",
    "/casino/ledger": "dev-admin-token",
    "/casino/reconciliation": "dev-admin-token",
    "/casino/launchGame": "dev-casino-api-token",
    "/casino/simulateRound": "dev-casino-api-token",
    "/reconciliation_data": "dev-reconciliation-token",
}

RAW_SIGNED = {
    "/webhooks/newstore": ("X-NewStore-Signature", "dev-newstore-secret"),
    "/casino/": ("x-casino-signature", "dev-casino-secret"),
    "/webhooks/transaction_updated": ("X-MAX-Signature", "dev-max-webhook-secret"),
}

WALLET = {"/wallet/": "dev-wallet-secret", "/webhooks/incoming": "dev-wallet-secret"}


def hex_hmac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@schemathesis.hook
def before_call(context, case, kwargs):
    path = case.operation.path
    headers = case.headers if case.headers is not None else {}
    for prefix, token in BEARER.items():
        if path.startswith(prefix):
            headers["Authorization"] = f"Bearer {token}"
    if path == "/orders" or path.startswith("/orders/"):
        headers["X-Partner-Id"] = "demo"
        headers["X-Partner-Token"] = "demotoken"
    body = case.body
    has_body = case.media_type is not None and body is not None and not isinstance(body, (bytes, str))
    if has_body:
        # Send exactly the bytes that are signed.
        try:
            raw = json.dumps(body, ensure_ascii=False).encode()
        except (TypeError, ValueError):
            raw = None
        if raw is not None:
            for prefix, (header, secret) in RAW_SIGNED.items():
                if path.startswith(prefix):
                    headers[header] = hex_hmac(secret, raw)
            for prefix, secret in WALLET.items():
                if path.startswith(prefix):
                    stamp = str(int(time.time()))
                    headers["X-Timestamp"] = stamp
                    headers["X-Signature"] = hex_hmac(secret, f"{stamp}:{canonical(body)}".encode())
            kwargs["data"] = raw
            kwargs.pop("json", None)
            headers["Content-Type"] = "application/json"
    case.headers = headers
