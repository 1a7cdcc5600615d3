"""The MegadetectorLite weights on disk: where they are cached, checking them, fetching them from the zamba wheel.

The two asset files are extracted from the ``zamba`` 2.7.2 wheel on PyPI (``pip download --no-deps``; zamba is
never installed), together with its MIT ``LICENSE`` and a ``NOTICE`` that says where they come from.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import IO

from backend.vision.mdlite import (
    DRIVENDATA_MIT_NOTICE,
    KWARGS_NAME,
    KWARGS_SHA256,
    WEIGHTS_NAME,
    WEIGHTS_SHA256,
    WHEEL_ASSET_DIR,
    WHEEL_LICENSE,
    ZAMBA_VERSION,
    sha256_of,
)

#: Seconds ``pip download`` may take (the wheel is about 41 MB).
PIP_TIMEOUT_S = 900
_FETCH_HINT = "run `camtrap fetch mdlite`"

NOTICE_TEXT = f"""\
MegadetectorLite weights ({WEIGHTS_NAME}, {KWARGS_NAME})

These files were extracted unchanged from {WHEEL_ASSET_DIR}/ of the zamba {ZAMBA_VERSION} wheel
(https://pypi.org/project/zamba/{ZAMBA_VERSION}/, https://github.com/drivendataorg/zamba) and are
distributed under the following licence:

{DRIVENDATA_MIT_NOTICE}"""


class MissingAssetError(ValueError):
    """A MegadetectorLite asset is missing or corrupt, or cannot be fetched; the message says what to do."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/camtrap-ml-backend/mdlite``, or ``~/.cache/camtrap-ml-backend/mdlite``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "camtrap-ml-backend" / "mdlite"


def asset_paths(cache_dir: Path | None = None) -> tuple[Path, Path]:
    """``(weights, kwargs_json)`` in ``cache_dir`` (default: :func:`default_cache_dir`)."""
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return directory / WEIGHTS_NAME, directory / KWARGS_NAME


def verify(cache_dir: Path | None = None) -> None:
    """Check that both assets are in ``cache_dir`` with their expected SHA-256.

    Raises:
        MissingAssetError: a file is missing or differs (one sentence, naming it).
    """
    weights, kwargs = asset_paths(cache_dir)
    for path, expected in ((weights, WEIGHTS_SHA256), (kwargs, KWARGS_SHA256)):
        if not path.is_file():
            raise MissingAssetError(f"MegadetectorLite file {path} is missing: {_FETCH_HINT}")
        if sha256_of(path) != expected:
            raise MissingAssetError(
                f"MegadetectorLite file {path} is corrupt (SHA-256 differs from zamba {ZAMBA_VERSION}'s): {_FETCH_HINT}"
            )


def fetch(cache_dir: Path | None = None, *, pip: list[str] | None = None) -> Path:
    """Put the assets, ``LICENSE`` and ``NOTICE`` into ``cache_dir``; nothing is downloaded if they are there.

    Args:
        cache_dir: Target folder (default: :func:`default_cache_dir`), created if needed.
        pip: The command that runs pip (default ``[sys.executable, "-m", "pip"]``); ``download --no-deps
            zamba==2.7.2 -d <tmp>`` is appended, so index options may be added to it.

    Returns:
        The cache folder.

    Raises:
        MissingAssetError: the wheel cannot be downloaded, or does not hold the expected files.
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        verify(directory)
    except MissingAssetError:
        with tempfile.TemporaryDirectory(prefix="mdlite-wheel-") as tmp:
            wheel = _download_wheel(Path(tmp), pip or [sys.executable, "-m", "pip"], directory)
            _extract(wheel, directory)
        verify(directory)
    if not (directory / "NOTICE").is_file():
        _write_atomically(directory / "NOTICE", NOTICE_TEXT.encode())
    if not (directory / "LICENSE").is_file():
        _write_atomically(directory / "LICENSE", DRIVENDATA_MIT_NOTICE.encode())
    return directory


def _by_hand(directory: Path) -> str:
    return (
        f"copy {WEIGHTS_NAME} and {KWARGS_NAME} from {WHEEL_ASSET_DIR}/ of the zamba-{ZAMBA_VERSION} wheel "
        f"(a zip file) into {directory} by hand"
    )


def _download_wheel(tmp: Path, pip: list[str], directory: Path) -> Path:
    command = [*pip, "download", "--no-deps", "--only-binary=:all:", f"zamba=={ZAMBA_VERSION}", "-d", str(tmp)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MissingAssetError(
            f"cannot run pip to download zamba=={ZAMBA_VERSION} ({type(exc).__name__}: {exc}): {_by_hand(directory)}"
        ) from exc
    wheels = sorted(tmp.glob(f"zamba-{ZAMBA_VERSION}-*.whl"))
    if done.returncode != 0 or not wheels:
        lines = [line.strip() for line in (done.stderr or done.stdout or "").splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        raise MissingAssetError(
            f"cannot download zamba=={ZAMBA_VERSION} from the package index ({reason}): {_by_hand(directory)}"
        )
    return wheels[0]


def _extract(wheel: Path, directory: Path) -> None:
    """Extract the two assets and the licence, each checked and moved into place atomically."""
    wanted = [
        (f"{WHEEL_ASSET_DIR}/{WEIGHTS_NAME}", WEIGHTS_NAME, WEIGHTS_SHA256),
        (f"{WHEEL_ASSET_DIR}/{KWARGS_NAME}", KWARGS_NAME, KWARGS_SHA256),
        (WHEEL_LICENSE, "LICENSE", None),
    ]
    try:
        with zipfile.ZipFile(wheel) as archive:
            for member, name, expected in wanted:
                with archive.open(member) as source:
                    _write_atomically(directory / name, source, expected)
    except (KeyError, zipfile.BadZipFile, OSError) as exc:
        raise MissingAssetError(
            f"the downloaded {wheel.name} does not hold the MegadetectorLite files ({type(exc).__name__}: {exc}): "
            f"{_by_hand(directory)}"
        ) from exc


def _write_atomically(target: Path, source: bytes | IO[bytes], expected_sha256: str | None = None) -> None:
    """Write bytes (or a binary stream) to a temporary file beside ``target``, check it, then ``os.replace``."""
    digest = hashlib.sha256()
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            if isinstance(source, bytes):
                handle.write(source)
                digest.update(source)
            else:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    handle.write(chunk)
                    digest.update(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o644)  # NamedTemporaryFile makes it 0600; the cache may be shared
        if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
            raise MissingAssetError(
                f"{target.name} in the zamba-{ZAMBA_VERSION} wheel has an unexpected SHA-256: "
                f"{_by_hand(target.parent)} from a trusted copy"
            )
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
