"""Where files live: a local path or an object-store URL (gs://), read and written
through etils.epath; JSON and text written atomically."""

from __future__ import annotations

import os

from etils import epath

from tinyscale.errors import TinyscaleError


def is_remote(path: str | os.PathLike) -> bool:
    """True for object-store URLs (gs://...), which have no O_EXCL and no local files."""
    return "://" in os.fspath(path)


def resolve(path: str | os.PathLike) -> epath.Path:
    """A local path made absolute (orbax refuses relative ones; a relative path would also
    change meaning with the working directory); gs:// and other URLs as they are."""
    path = os.fspath(path)
    if not is_remote(path):
        return epath.Path(os.path.abspath(os.path.expanduser(path)))
    if path.startswith("gs://"):
        try:
            import gcsfs  # noqa: F401  (etils.epath reads gs:// through it)
        except ImportError:
            raise TinyscaleError(f"{path} is on Google Cloud Storage, which needs gcsfs: "
                                 "install it with pip install 'tinyscale[gcs]'.") from None
    return epath.Path(path)


def write_atomic(path: epath.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_text(text)
    tmp.replace(path)
