"""MNIST and Fashion-MNIST from the original IDX ``.gz`` files, served as functions on ``[0, 1)^2``.

Files and layout
----------------
A data root holds one folder per data set, each with the four original files and a
``SHA256SUMS`` file (``sha256sum`` format)::

    <root>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
    <root>/fashion-mnist/...

The root comes from the ``root`` argument or the ``FSDIFF_DATA_DIR`` environment
variable. Files are verified against ``<root>/<kind>/SHA256SUMS`` when it exists and
otherwise against the official hashes built into this module (:data:`OFFICIAL_SHA256`);
digests are cached per (path, size, mtime) so repeated loads do not re-hash.

Resolution protocol
-------------------
An image is a function on the unit torus ``[0, 1)^2`` seen on the vertex-centred
``Grid((28, 28))`` (:data:`MNIST_GRID`; pixel ``(i, j)`` sits at ``(i/28, j/28)``, ``i``
the row). It is served at any other grid of the unit square by :func:`fsdiff.grid.resample`:

* 28 is even, so the Nyquist row/column (``|k| = 14``) cannot be kept consistently and is
  **dropped** whenever an image leaves the 28-grid (and, with ``band_limit=True``, already
  on it): the served function is the trigonometric polynomial with ``|k_i| <= 13``.
* Finer grids (e.g. 56, 64) get band-limited (Fourier) interpolation: exact for that
  polynomial, but it rings near sharp strokes (Gibbs), so values leave ``[0, 1]`` slightly.
* Coarser grids (e.g. 14, 16) get Fourier truncation, i.e. an anti-aliased projection.

So fine -> 28 -> fine is the identity on the kept modes, and restriction of a fine image
equals the image served directly at the coarse grid (exact nesting, as for the GRFs).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .._checks import positive_int
from ..grid import Grid, resample
from .base import FunctionDataset

__all__ = [
    "MNIST",
    "DATA_ENV_VAR",
    "MNIST_GRID",
    "OFFICIAL_SHA256",
    "DEFAULT_URLS",
    "data_root",
    "mnist_files",
    "load_mnist",
    "read_idx",
    "verify_file",
    "download_mnist",
    "mnist_on_grid",
]

#: environment variable naming the data root
DATA_ENV_VAR = "FSDIFF_DATA_DIR"

#: the native grid of MNIST images: 28 x 28 points on the unit torus
MNIST_GRID = Grid((28, 28))

KINDS = ("mnist", "fashion-mnist")
SPLITS = {"train": "train", "test": "t10k"}

#: SHA-256 of the official files (the values widely published; they match ``SHA256SUMS`` in the shared data)
OFFICIAL_SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}

#: public mirrors of the original files (used only with ``download=True``)
DEFAULT_URLS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}

_WHERE = (
    "MNIST: http://yann.lecun.com/exdb/mnist/ (mirror {mnist}); Fashion-MNIST: "
    "https://github.com/zalandoresearch/fashion-mnist (mirror {fashion}). Place the .gz files in "
    "<root>/<kind>/, call load_mnist(..., download=True), or pass --download to `fsdiff train` / `fsdiff demo`."
).format(mnist=DEFAULT_URLS["mnist"], fashion=DEFAULT_URLS["fashion-mnist"])

# (resolved path, size, mtime_ns) -> sha256 hex digest
_DIGEST_CACHE: dict[tuple[str, int, int], str] = {}
# (resolved path, size, mtime_ns, limit) -> uint8 array
_ARRAY_CACHE: dict[tuple, np.ndarray] = {}
_ARRAY_CACHE_MAX = 8


# --------------------------------------------------------------------------- locating files
def _check_kind_split(kind: str, split: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLITS)}")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$FSDIFF_DATA_DIR``; ``ValueError`` if neither."""
    if root is None:
        env = os.environ.get(DATA_ENV_VAR)
        if not env:
            raise ValueError(
                f"no data directory given: pass root=... or set the environment variable {DATA_ENV_VAR} "
                f"to a folder holding mnist/ and fashion-mnist/ (see {_WHERE})"
            )
        root = env
    return Path(root).expanduser()


def mnist_files(split: str = "train", kind: str = "mnist") -> tuple[str, str]:
    """File names ``(images, labels)`` of a split, e.g. ``train-images-idx3-ubyte.gz``."""
    _check_kind_split(kind, split)
    p = SPLITS[split]
    return f"{p}-images-idx3-ubyte.gz", f"{p}-labels-idx1-ubyte.gz"


# --------------------------------------------------------------------------- verification
def _read_sums(path: Path) -> dict[str, str]:
    sums: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise ValueError(f"{path}: line {n} is not '<sha256>  <file>': {line!r}")
        sums[parts[1].lstrip("*").strip()] = parts[0].lower()
    return sums


def _expected_sha256(path: Path, kind: str) -> tuple[str, str]:
    """Expected digest of ``path`` and where it came from."""
    sums_file = path.parent / "SHA256SUMS"
    if sums_file.is_file():
        sums = _read_sums(sums_file)
        if path.name not in sums:
            raise ValueError(f"{sums_file} lists no checksum for {path.name}; add one or pass verify=False")
        return sums[path.name], str(sums_file)
    if path.name in OFFICIAL_SHA256.get(kind, {}):
        return OFFICIAL_SHA256[kind][path.name], f"the official {kind} checksums built into fsdiff"
    raise ValueError(f"no checksum known for {path} (no SHA256SUMS next to it); pass verify=False")


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGEST_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _DIGEST_CACHE[key] = h.hexdigest()
    return _DIGEST_CACHE[key]


def verify_file(path: str | os.PathLike, kind: str = "mnist", expected: str | None = None) -> str:
    """Check the SHA-256 of ``path``; return the digest or raise ``ValueError`` naming both hashes.

    ``expected`` defaults to the entry in ``SHA256SUMS`` next to the file, else the official hash.
    Digests are cached per (path, size, mtime).
    """
    path = Path(path)
    source = "the caller"
    if expected is None:
        expected, source = _expected_sha256(path, kind)
    actual = _sha256(path)
    if actual != expected.lower():
        raise ValueError(
            f"checksum mismatch for {path}: expected sha256 {expected} (from {source}), got {actual}. "
            f"The file is corrupted or not the original; delete it and fetch it again ({_WHERE})"
        )
    return actual


# --------------------------------------------------------------------------- IDX parsing
def read_idx(path: str | os.PathLike, ndim: int | None = None, limit: int | None = None) -> np.ndarray:
    """Parse a gzip-compressed IDX file of unsigned bytes into a uint8 array ``(count, *dims)``.

    The header is big-endian: two zero bytes, the type code (0x08 = ubyte), the number of
    dimensions, then one 32-bit size per dimension. With ``limit`` only the first ``limit``
    items are read; otherwise the payload must have exactly the declared length.
    Raises ``ValueError`` on a bad magic number, wrong dimensionality, truncation or trailing data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {path} does not exist ({_WHERE})")
    try:
        with gzip.open(path, "rb") as fh:
            magic = fh.read(4)
            if len(magic) < 4:
                raise ValueError(f"{path}: truncated IDX header ({len(magic)} of 4 magic bytes)")
            if magic[0] != 0 or magic[1] != 0:
                raise ValueError(f"{path}: bad IDX magic {magic.hex()} (expected 0000 08 0n)")
            if magic[2] != 0x08:
                raise ValueError(f"{path}: IDX type code 0x{magic[2]:02x} is not unsigned byte (0x08)")
            nd = magic[3]
            if ndim is not None and nd != ndim:
                raise ValueError(f"{path}: IDX file has {nd} dimensions, expected {ndim} (magic {magic.hex()})")
            raw = fh.read(4 * nd)
            if len(raw) < 4 * nd:
                raise ValueError(f"{path}: truncated IDX header ({len(raw)} of {4 * nd} size bytes)")
            dims = [int(v) for v in np.frombuffer(raw, dtype=">u4")]
            count = dims[0] if dims else 1
            item = int(np.prod(dims[1:])) if nd > 1 else 1
            n_read = count if limit is None else min(int(limit), count)
            payload = fh.read(n_read * item)
            if len(payload) < n_read * item:
                raise ValueError(
                    f"{path}: truncated IDX data: header declares {dims} ({count * item} bytes), "
                    f"only {len(payload)} bytes could be read"
                )
            if limit is None and fh.read(1):
                raise ValueError(f"{path}: trailing data after the {count * item} bytes declared by header {dims}")
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: corrupted or truncated gzip stream ({type(e).__name__}: {e})") from None
    return np.frombuffer(bytearray(payload), dtype=np.uint8).reshape([n_read] + dims[1:])


def _cached_idx(path: Path, ndim: int, limit: int | None) -> np.ndarray:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, limit)
    if key not in _ARRAY_CACHE:
        if len(_ARRAY_CACHE) >= _ARRAY_CACHE_MAX:
            _ARRAY_CACHE.pop(next(iter(_ARRAY_CACHE)))
        _ARRAY_CACHE[key] = read_idx(path, ndim=ndim, limit=limit)
    return _ARRAY_CACHE[key]


# --------------------------------------------------------------------------- download
def download_mnist(
    root: str | os.PathLike | None = None,
    kind: str = "mnist",
    split: str | None = None,
    base_url: str | None = None,
    timeout: float = 60.0,
    opener: Callable[..., object] | None = None,
) -> list[Path]:
    """Download missing files of ``kind`` (one split or both) into ``<root>/<kind>/``; return their paths.

    Each file is written to a temporary file in the target folder, verified (``SHA256SUMS``
    there, else the official hashes) and only then renamed into place, so a failed or
    corrupted download leaves nothing behind. ``opener(url, timeout=...)`` defaults to
    :func:`urllib.request.urlopen`. Existing files are left untouched.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    folder = data_root(root) / kind
    folder.mkdir(parents=True, exist_ok=True)
    base = (base_url or DEFAULT_URLS[kind]).rstrip("/") + "/"
    opener = opener or urllib.request.urlopen
    names = [f for s in ([split] if split else list(SPLITS)) for f in mnist_files(s, kind)]
    out = []
    for name in names:
        target = folder / name
        out.append(target)
        if target.exists():
            continue
        url = base + name
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
        try:
            try:
                with os.fdopen(fd, "wb") as dst, opener(url, timeout=timeout) as src:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        dst.write(chunk)
            except (urllib.error.URLError, OSError) as e:
                raise OSError(f"could not download {url}: {e}") from None
            expected, source = _expected_sha256(target, kind)
            actual = _sha256(Path(tmp))
            if actual != expected:
                raise ValueError(
                    f"checksum mismatch for {name} downloaded from {url}: expected sha256 {expected} "
                    f"(from {source}), got {actual}; nothing was written to {folder}"
                )
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return out


# --------------------------------------------------------------------------- loading
def load_mnist(
    split: str = "train",
    root: str | os.PathLike | None = None,
    kind: str = "mnist",
    verify: bool = True,
    download: bool = False,
    limit: int | None = None,
    base_url: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a split of MNIST / Fashion-MNIST from ``<root>/<kind>/``.

    Parameters
    ----------
    split : "train" (60000 items) or "test" (10000 items).
    root : data root; default ``$FSDIFF_DATA_DIR``.
    kind : "mnist" or "fashion-mnist".
    verify : check SHA-256 (``SHA256SUMS`` in the folder, else the official hashes).
    download : fetch missing files from ``base_url`` (default :data:`DEFAULT_URLS`) first.
    limit : read only the first ``limit`` items.

    Returns
    -------
    images : ``(N, 1, 28, 28)`` float32 in ``[0, 1]`` (raw pixels / 255, on :data:`MNIST_GRID`).
    labels : ``(N,)`` int64 in ``0..9``.
    """
    _check_kind_split(kind, split)
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be a positive integer or None; got {limit}")
    folder = data_root(root) / kind
    img_name, lab_name = mnist_files(split, kind)
    paths = [folder / img_name, folder / lab_name]
    if download and not all(p.is_file() for p in paths):
        download_mnist(folder.parent, kind, split, base_url=base_url)
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{kind} file {p.name} not found in {folder} ({_WHERE})")
    if verify:
        for p in paths:
            verify_file(p, kind)
    images = _cached_idx(paths[0], 3, limit)
    labels = _cached_idx(paths[1], 1, limit)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{paths[0]}: images have shape {images.shape[1:]}, expected (28, 28)")
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images in {img_name} but {len(labels)} labels in {lab_name}")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{paths[1]}: label {int(labels.max())} outside 0..9")
    x = torch.from_numpy(images).to(torch.float32).div_(255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def mnist_on_grid(images: torch.Tensor, grid: Grid, band_limit: bool = True) -> torch.Tensor:
    """Serve ``(..., 28, 28)`` images at ``grid`` (unit square) by Fourier resampling.

    With ``band_limit`` the Nyquist row/column of the 28-grid is removed even when
    ``grid`` is the 28-grid, so every resolution sees the same trigonometric polynomial
    (``|k_i| <= 13``); without it the 28-grid gets the raw pixels. See the module docstring.
    Shapes: ``(..., 28, 28) -> (..., *grid.shape)``.
    """
    MNIST_GRID.check(images, "images", min_leading=0)
    if grid.ndim != 2:
        raise ValueError(f"MNIST images are 2-D; cannot serve them on {grid!r}")
    if not np.allclose(grid.length, MNIST_GRID.length):
        raise ValueError(f"MNIST images live on the unit square; grid {grid!r} has lengths {grid.length}")
    if band_limit and grid == MNIST_GRID:
        return MNIST_GRID.irfft(MNIST_GRID.rfft(images) * MNIST_GRID.mode_mask.to(images.device))
    return resample(images, MNIST_GRID, grid)


class MNIST(FunctionDataset):
    """MNIST / Fashion-MNIST images as functions on the unit torus, served at any grid.

    ``sample`` draws images uniformly with replacement from the split (the empirical law)
    using ``generator`` and serves them at ``grid`` with :func:`fsdiff.data.mnist.mnist_on_grid`
    (Fourier resampling from the 28-grid; with ``band_limit=True`` the Nyquist row/column is
    dropped at every resolution, 28 included, so the data at two grids are exact Fourier
    restrictions of one another). ``materialize`` draws *without* replacement (a seeded subset).

    Parameters
    ----------
    split, kind, root, verify, limit : as in :func:`fsdiff.data.load_mnist` (loaded lazily).
    band_limit : drop the Nyquist modes also on the native 28-grid (default True).
    digits : keep only these labels (e.g. ``[0, 1]``), or None for all.
    """

    type_name = "mnist"
    channels = 1
    native_grid = MNIST_GRID

    def __init__(
        self,
        split: str = "train",
        kind: str = "mnist",
        root: str | os.PathLike | None = None,
        verify: bool = True,
        limit: int | None = None,
        band_limit: bool = True,
        digits: list[int] | None = None,
    ):
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLITS)}")
        self.split = split
        self.kind = kind
        self.root = None if root is None else str(root)
        self.verify = bool(verify)
        self.limit = None if limit is None else int(limit)
        self.band_limit = bool(band_limit)
        self.digits = None if digits is None else sorted(int(d) for d in digits)
        if self.digits is not None and not all(0 <= d <= 9 for d in self.digits):
            raise ValueError(f"digits must be labels in 0..9; got {digits}")
        self._images: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None

    def _load(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._images is None:
            x, y = load_mnist(self.split, self.root, self.kind, verify=self.verify, limit=self.limit)
            if self.digits is not None:
                keep = torch.isin(y, torch.tensor(self.digits))
                x, y = x[keep], y[keep]
                if len(y) == 0:
                    raise ValueError(f"no {self.kind} {self.split} images with labels {self.digits}")
            self._images, self._labels = x, y
        return self._images, self._labels  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self._load()[1])

    @property
    def labels(self) -> torch.Tensor:
        """Labels of the (filtered) split, ``(N,)`` int64."""
        return self._load()[1]

    def get(self, index: torch.Tensor | slice | list[int], grid: Grid = MNIST_GRID) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``index`` served on ``grid`` and their labels: ``((n, 1, *grid.shape), (n,))``."""
        x, y = self._load()
        return mnist_on_grid(x[index], grid, self.band_limit), y[index]

    def sample(self, grid: Grid, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images drawn with replacement, ``(n, 1, *grid.shape)`` float32."""
        n = positive_int(n)
        idx = torch.randint(len(self), (n,), generator=generator)
        return self.get(idx, grid)[0]

    def materialize(self, grid: Grid, n: int, seed: int = 0) -> torch.Tensor:
        """A seeded subset of ``n`` distinct images, ``(n, 1, *grid.shape)``; ``ValueError`` if ``n > len(self)``."""
        n = positive_int(n)
        if n > len(self):
            raise ValueError(f"asked for {n} distinct images but the split has {len(self)}")
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(int(seed)))[:n]
        return self.get(idx, grid)[0]

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"type": self.type_name, "split": self.split, "kind": self.kind, "verify": self.verify,
                             "band_limit": self.band_limit}
        for key in ("root", "limit", "digits"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d
