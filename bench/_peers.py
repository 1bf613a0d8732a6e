"""Locate and import the peer harness's ``common.py`` (the shared W1/W2/W3 driver).

The peer harness lives outside this repository (``../shared/bench/peers`` from the
repository root; override with ``$BENCH_PEERS_DIR``). It is imported at run time, never
copied. Its ``.state`` scratch directory is redirected into ``bench/results/`` so the
shared copy is never written to (bytecode caching is also off for that import).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DEFAULT_PEERS_DIR = REPO.parent / "shared" / "bench" / "peers"


def peers_dir() -> Path:
    return Path(os.environ.get("BENCH_PEERS_DIR") or DEFAULT_PEERS_DIR).resolve()


def load_common() -> ModuleType:
    """Import the peers' ``common`` module (once per process)."""
    if "common" in sys.modules:
        return sys.modules["common"]
    where = peers_dir()
    if not (where / "common.py").is_file():
        raise SystemExit(f"bench: peer harness not found at {where} (set BENCH_PEERS_DIR)")
    if str(where) not in sys.path:
        sys.path.insert(0, str(where))
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # leave the shared directory untouched
    try:
        common = importlib.import_module("common")
    finally:
        sys.dont_write_bytecode = before
    state = RESULTS / "state"
    setattr(common, "STATE", str(state))  # noqa: B010 (a module we do not type)
    setattr(common, "LOGS", str(state / "logs"))  # noqa: B010
    return common
