"""Where data files come from: local folders, the cache, system packages, mirrors.

Lookup order for a data set called NAME (``mnist``, ``fashion-mnist``,
``kdd99``)::

    1. data_dir            and data_dir/NAME          (--data-dir)
    2. $PBP_DATA_DIR       and $PBP_DATA_DIR/NAME
    3. the cache           $PBP_CACHE_DIR/NAME, else pooch.os_cache("parallel-backprop")/NAME
    4. the data set's system folders (fashion-mnist: /usr/share/datasets/fashion-mnist,
       Debian's dataset-fashion-mnist)
    5. a download into the cache, checked against the published checksum,
       unless $PBP_OFFLINE is set or the caller passed download=False

Local files are not checksummed (Debian re-gzips Fashion-MNIST, so its
archives differ from the published ones byte for byte); the readers
validate their structure instead. Environment variables are read at call
time, never at import.

``IdxFiles`` describes an image data set's four IDX files (``MNIST_FILES``,
``FASHION_MNIST_FILES``); ``locate_kdd`` finds the KDD Cup 99 files. The
table of data sets (``datasets.DATASETS``) says which data set uses which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pooch

from ..errors import DataError
from .download import fetch

DATA_DIR_ENV = "PBP_DATA_DIR"
CACHE_DIR_ENV = "PBP_CACHE_DIR"
OFFLINE_ENV = "PBP_OFFLINE"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class RemoteFile:
    """A published file: its name, checksum ("md5:..." / "sha256:...") and mirrors."""

    filename: str
    known_hash: str
    urls: tuple[str, ...]


def _mirrored(filename: str, md5: str, bases: tuple[str, ...]) -> RemoteFile:
    return RemoteFile(filename, f"md5:{md5}", tuple(base + filename for base in bases))


# The four IDX files of an image data set, by role: name without ".gz".
IMAGE_FILES = {
    "train-images": "train-images-idx3-ubyte",
    "train-labels": "train-labels-idx1-ubyte",
    "test-images": "t10k-images-idx3-ubyte",
    "test-labels": "t10k-labels-idx1-ubyte",
}
_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                  "https://storage.googleapis.com/cvdf-datasets/mnist/",
                  "http://yann.lecun.com/exdb/mnist/")
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)


@dataclass  # not frozen: a test points system_dirs at a folder of its own
class IdxFiles:
    """The four IDX files of an image data set: the published ones, and where else to look.

    downloads     role (a key of ``IMAGE_FILES``) -> the published file
    system_dirs   folders a system package installs the files in (step 4)
    install_hint  how to install that package, for the error message
    """

    downloads: dict[str, RemoteFile]
    system_dirs: tuple[Path, ...] = ()
    install_hint: str = ""

    def locate(self, name: str, data_dir=None, download: bool | None = None,
               progress: bool = True) -> dict[str, Path]:
        """Paths of the four files of data set ``name``, keyed by role.

        The first folder holding all four (each gzipped or raw) wins, so that a
        training set is never paired with another folder's test set.
        """
        dirs = search_dirs(name, data_dir, self.system_dirs)
        for folder in dirs:
            found = {}
            for role, stem in IMAGE_FILES.items():
                for candidate in (folder / f"{stem}.gz", folder / stem):
                    if candidate.is_file():
                        found[role] = candidate
                        break
            if len(found) == len(IMAGE_FILES):
                return found
        allowed, why = downloads_allowed(download)
        if not allowed:
            names = ", ".join(f"{stem}[.gz]" for stem in IMAGE_FILES.values())
            raise DataError(f"{name}: the IDX files ({names}) are not in "
                            f"{', '.join(map(str, dirs))} and {why}; "
                            f"{what_to_do(self.install_hint)}")
        dest = cache_dir() / name
        return {role: fetch(remote.filename, list(remote.urls), remote.known_hash, dest,
                            progress)
                for role, remote in self.downloads.items()}


MNIST_FILES = IdxFiles({
    "train-images": _mirrored("train-images-idx3-ubyte.gz",
                              "f68b3c2dcbeaaa9fbdd348bbdeb94873", _MNIST_MIRRORS),
    "train-labels": _mirrored("train-labels-idx1-ubyte.gz",
                              "d53e105ee54ea40749a09fcbcd1e9432", _MNIST_MIRRORS),
    "test-images": _mirrored("t10k-images-idx3-ubyte.gz",
                             "9fb629c4189551a2d022fa330f9573f3", _MNIST_MIRRORS),
    "test-labels": _mirrored("t10k-labels-idx1-ubyte.gz",
                             "ec29112dd5afa0611ce80d1b7f02629c", _MNIST_MIRRORS),
})
FASHION_MNIST_FILES = IdxFiles({
    "train-images": _mirrored("train-images-idx3-ubyte.gz",
                              "8d4fb7e6c68d591d4c3dfef9ec88bf0d", _FASHION_MIRRORS),
    "train-labels": _mirrored("train-labels-idx1-ubyte.gz",
                              "25c81989df183df01b3e8a0aad5dffbe", _FASHION_MIRRORS),
    "test-images": _mirrored("t10k-images-idx3-ubyte.gz",
                             "bef4ecab320f06d8554ea6380940ec79", _FASHION_MIRRORS),
    "test-labels": _mirrored("t10k-labels-idx1-ubyte.gz",
                             "bb300cfdad3c16e7a12a480ee83cd310", _FASHION_MIRRORS),
}, system_dirs=(DEBIAN_FASHION_DIR,), install_hint="`apt-get install dataset-fashion-mnist`")

KDD_DOWNLOADS = {
    "10%": RemoteFile(
        "kddcup.data_10_percent.gz",
        "sha256:8045aca0d84e70e622d1148d7df782496f6333bf6eb979a1b0837c42a9fd9561",
        ("http://kdd.ics.uci.edu/databases/kddcup99/kddcup.data_10_percent.gz",
         "https://ndownloader.figshare.com/files/5976042")),
    "full": RemoteFile(
        "kddcup.data.gz",
        "sha256:3b6c942aa0356c0ca35b7b595a26c89d343652c9db428893e7494f837b274292",
        ("http://kdd.ics.uci.edu/databases/kddcup99/kddcup.data.gz",
         "https://ndownloader.figshare.com/files/5976045")),
}
# Local names accepted for the default KDD file, in order of preference.
KDD_LOCAL_NAMES = {
    "10%": ("kddcup.data_10_percent.gz", "kddcup.data_10_percent",
            "kddcup.data.gz", "kddcup.data"),
    "full": ("kddcup.data.gz", "kddcup.data"),
}


def cache_dir() -> Path:
    """The download cache: $PBP_CACHE_DIR, else the user cache of 'parallel-backprop'."""
    return Path(os.environ.get(CACHE_DIR_ENV) or pooch.os_cache("parallel-backprop"))


def downloads_allowed(download: bool | None) -> tuple[bool, str]:
    """Whether to download, and if not, why (for the error message)."""
    if download is False:
        return False, "downloads are off (download=False)"
    offline = os.environ.get(OFFLINE_ENV, "").strip().lower()
    if offline not in ("", "0", "false", "no"):
        return False, f"downloads are off ({OFFLINE_ENV}={os.environ[OFFLINE_ENV]})"
    return True, ""


def search_dirs(name: str, data_dir: str | os.PathLike | None,
                system_dirs: tuple[Path, ...] = ()) -> list[Path]:
    """The folders to look in for data set ``name``, in order (steps 1-4)."""
    dirs = []
    if data_dir is not None:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise DataError(f"data folder {data_dir}: does not exist or is not a folder")
        dirs += [data_dir, data_dir / name]
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        dirs += [Path(env), Path(env) / name]
    dirs.append(cache_dir() / name)
    dirs += system_dirs
    unique = []
    for folder in dirs:
        if folder not in unique:
            unique.append(folder)
    return unique


def what_to_do(install_hint: str = "") -> str:
    """What to do about data files that are neither here nor downloadable."""
    hint = (f"pass --data-dir with the files, set {DATA_DIR_ENV}, or allow the download "
            f"(unset {OFFLINE_ENV})")
    return f"{hint}, or {install_hint}" if install_hint else hint


def locate_kdd(kdd_file: str | os.PathLike | None, data_dir=None, download: bool | None = None,
               progress: bool = True, what: str = "KDD file") -> Path:
    """The KDD Cup 99 file to read.

    ``kdd_file``: None for the 10% file, ``"full"`` for the full file (both
    looked up, then downloaded), or a path. A bare file name that is not in
    the current folder is also looked for in the data folders.
    """
    if kdd_file is not None and str(kdd_file) != "full":
        path = Path(kdd_file)
        if path.is_file():
            return path
        if len(path.parts) == 1:
            for folder in search_dirs("kdd99", data_dir):
                if (folder / path).is_file():
                    return folder / path
        raise DataError(f"{what} {path}: not found")
    which = "full" if kdd_file is not None else "10%"
    dirs = search_dirs("kdd99", data_dir)
    for folder in dirs:
        for filename in KDD_LOCAL_NAMES[which]:
            if (folder / filename).is_file():
                return folder / filename
    allowed, why = downloads_allowed(download)
    remote = KDD_DOWNLOADS[which]
    if not allowed:
        raise DataError(f"kdd99: {' or '.join(KDD_LOCAL_NAMES[which])} not in "
                        f"{', '.join(map(str, dirs))} and {why}; {what_to_do()}")
    return fetch(remote.filename, list(remote.urls), remote.known_hash, cache_dir() / "kdd99",
                 progress)
