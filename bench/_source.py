"""Pin the library source a benchmark measures.

Other engineers edit ``src/`` while benchmarks run, so the runner measures a commit, not
the working tree: ``git archive <ref> src/errands`` is unpacked once under
``bench/results/snapshots/<sha>/src`` and put first on ``PYTHONPATH`` of the driver and
of every worker (ahead of the editable install's ``.pth`` entry).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

from ._peers import REPO, RESULTS


def resolve(ref: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def snapshot(ref: str) -> tuple[Path, str]:
    """(directory to put on PYTHONPATH, full commit sha) for ``ref``."""
    sha = resolve(ref)
    dest = RESULTS / "snapshots" / sha[:12]
    if not (dest / "src" / "errands" / "__init__.py").exists():
        data = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", sha, "src/errands"],
            capture_output=True,
            check=True,
        ).stdout
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(tmp, filter="data")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return dest / "src", sha


def fingerprint(package_dir: Path) -> str:
    """A short hash of the ``.py`` files of the package actually imported."""
    digest = hashlib.sha1()
    for f in sorted(package_dir.rglob("*.py")):
        digest.update(f.read_bytes())
    return digest.hexdigest()[:10]
