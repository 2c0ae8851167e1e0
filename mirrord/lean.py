"""What the mirror daemon leaves unloaded: OpenSSL, unless its metrics are served.

mirrord speaks no TLS and hashes only short strings (the config digest, a module name, a key's
fingerprint), yet `import asyncio` loads `ssl` and `import hashlib` loads OpenSSL's libcrypto:
about 6 MiB of resident memory in a daemon whose whole resident set is its cost on a small
server (measured in `bench/mirror.py`, against lsyncd's). Python has the fallbacks built in:
asyncio runs without `ssl` (as on a Python built without OpenSSL), and hashlib and hmac use
their own SHA-2 and BLAKE2 when `_hashlib` is absent. A module set to None in `sys.modules`
is one whose import raises ImportError, the documented way to keep a module out.

The metrics endpoint needs prometheus_client, which imports `ssl` unconditionally: the
daemon lets OpenSSL in (`allow_openssl`) before it loads the exporter.
"""

from __future__ import annotations

import sys
from typing import Final

OPENSSL: Final = ("ssl", "_ssl", "_hashlib")


def without_openssl() -> None:
    """Make later imports of OpenSSL's modules fail over to Python's fallbacks (no-op for a
    module already loaded)."""
    for name in OPENSSL:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def allow_openssl() -> None:
    """Undo `without_openssl`: the next import loads OpenSSL's modules for real."""
    for name in OPENSSL:
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]
