"""Run folders: the one module that knows their layout.

    RUN/config.json     the resolved config: what the run is
    RUN/metrics.jsonl   one JSON row per epoch (per segment of a spiking protocol)
    RUN/probes.jsonl    alignment probes; RUN/<stream>.jsonl any other stream of rows
    RUN/checkpoint.pt   the state to resume from exactly (tensors, numbers, strings and the
                        row counts of every stream; loaded with weights_only, so it cannot
                        run code)
    RUN/summary.json    a protocol's final results; RUN/*.csv tables; RUN/*.png figures
    RUN/tensorboard/    the rows as TensorBoard events, when asked for (apical.tensorboard)
    RUN/.lock           held (flock) while a process writes the run

An experiment's folder OUT/NAME (OUT/NAME-PRESET for a preset) holds its runs' folders,
OUT/NAME/LABEL, and its report (report.json, the figure); OUT/NAME/ray holds Ray Tune's own
files when its runs were trained as Ray trials (apical.tune).

Every write is atomic (a temporary file, fsync, rename, fsync of the folder), so a kill at
any moment leaves the old file or the new one, never a torn one; the temporary files of
killed writes are removed by the next writer. Rows hold valid JSON: a missing or
non-finite value is `null`. Rows go to disk with each checkpoint, and the checkpoint
records how many there were: resuming drops the rows written after it, so the rows always
belong to the state that resumes.

A folder has one writer at a time (`RunFolder.writer`: a second gets one line naming the
process that holds it), a run in it is never overwritten (`begin` refuses unless asked to
resume), and a resumed config must equal the saved one except in fields the caller
declares extendable or locational (where the data lives, which device runs it).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from apical.errors import ApicalError

CONFIG, CHECKPOINT, SUMMARY, REPORT, LOCK, TENSORBOARD = (
    "config.json", "checkpoint.pt", "summary.json", "report.json", ".lock", "tensorboard",
)  # fmt: skip
_TMP = ".tmp-"  # temporary files are ".<name>.tmp-<random>"


def experiment_folder(
    out: str | Path, name: str, preset: str | None = None, seed: int | None = None
) -> Path:
    """OUT/NAME, OUT/NAME-PRESET for a preset's shorter protocol, and -seed-N appended for
    the runs of another seed than the experiment's own."""
    return Path(out) / (
        name + (f"-{preset}" if preset else "") + (f"-seed-{seed}" if seed is not None else "")
    )


def ray_folder(experiment: Path) -> Path:
    """Where Ray Tune keeps its own files for an experiment's trials."""
    return experiment / "ray"


def jsonable(obj: Any) -> Any:
    """`obj` with non-finite floats as None (JSON has no NaN) and tuples as lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj


def dumps(obj: Any, indent: int | None = None) -> str:
    return json.dumps(jsonable(obj), indent=indent, allow_nan=False)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, rename it over `path`
    and fsync the folder (so the rename itself survives a crash)."""
    path = Path(path)
    make_folder(path.parent)
    if path.is_dir():
        raise ApicalError(f"cannot write {path}: it is a folder; choose another name")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{_TMP}")
    except OSError as e:
        raise ApicalError(
            f"cannot write in {path.parent} ({_reason(e)}); choose another folder"
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; use the user's umask
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):  # a full disk, a vanished folder
            raise ApicalError(
                f"cannot write {path} ({_reason(e)}); free space or choose another place"
            ) from None
        raise
    _fsync_folder(path.parent)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, (dumps(obj, indent=2) + "\n").encode())


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A table with `columns` (other keys ignored; non-finite numbers as "nan")."""
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    atomic_write(path, text.getvalue().encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApicalError(f"{path} is unreadable ({_reason(e)}); restore or remove it") from None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a .jsonl file ([] when it does not exist); one line naming the file and
    line when a row is not JSON (older runs wrote bare NaN: it reads as NaN)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ApicalError(f"{path} is unreadable ({_reason(e)}); restore or remove it") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            raise ApicalError(
                f"{path} line {number} is not a JSON row; the file is corrupt: restore it or "
                "remove the run"
            )
        rows.append(row)
    return rows


class RunFolder:
    """One run's folder (see the module docstring). Reading is open to anyone; writing
    happens inside `with folder.writer():`, which holds the folder's lock."""

    def __init__(self, path: str | Path) -> None:
        if str(path).strip() == "":
            raise ApicalError("the run folder is an empty path; name a folder or leave it out")
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._pending_config: dict[str, Any] | None = None  # written with the first save
        self._fresh = False  # begun as a new run, nothing saved yet

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- reading ----------------------------------------------------------------------------
    def config(self) -> dict[str, Any] | None:
        """The saved config (None when the folder holds none)."""
        path = self.path / CONFIG
        if not path.is_file():
            return None
        saved = read_json(path)
        if not isinstance(saved, dict):
            raise ApicalError(f"{path} does not hold a config table; restore or remove it")
        return saved

    def rows_file(self, stream: str = "metrics") -> Path:
        return self.path / f"{stream}.jsonl"

    def rows(self, stream: str = "metrics") -> list[dict[str, Any]]:
        return read_rows(self.rows_file(stream))

    def has_rows(self, stream: str = "metrics") -> bool:
        return self.rows_file(stream).is_file()

    def summary(self) -> Any:
        path = self.path / SUMMARY
        return read_json(path) if path.is_file() else None

    def has_run(self) -> bool:
        return (self.path / CONFIG).exists() or self.has_checkpoint() or self.has_rows()

    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).is_file()

    def drop_checkpoint(self) -> None:
        """Remove the checkpoint of a finished run whose model lives on in a later run (a
        continual task that the next task started from); its config and rows stay."""
        if not self.is_finished():
            raise ApicalError(f"{self.path} holds {self.describe()}; its checkpoint is kept")
        (self.path / CHECKPOINT).unlink(missing_ok=True)

    def checkpoint(self, device: torch.device | str = "cpu") -> dict[str, Any]:
        """The checkpoint's state (weights_only: a checkpoint can never run code)."""
        path = self.path / CHECKPOINT
        if not path.is_file():
            raise ApicalError(f"nothing to resume: no checkpoint in {self.path}")
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except Exception as e:  # a torn, foreign or crafted file: never trusted
            raise ApicalError(
                f"checkpoint {path} is unreadable ({type(e).__name__}); start a new run"
            ) from None
        if not isinstance(state, dict):
            raise ApicalError(f"checkpoint {path} holds no state table; start a new run")
        return state

    def progress(self) -> tuple[int | None, int | None]:
        """(epochs done, epochs its config declares); None where the folder does not say."""
        rows = self.rows() if self.has_rows() else []
        done = rows[-1].get("epoch") if rows else None
        total = (self.config() or {}).get("epochs")
        return (done if isinstance(done, int) else None, total if isinstance(total, int) else None)

    def is_finished(self) -> bool:
        """Whether its rows reach the epochs its own config declares."""
        done, total = self.progress()
        return done is not None and total is not None and done >= total

    def describe(self) -> str:
        """What the folder holds, for messages: 'a run at epoch 3 of 10', 'a finished run'."""
        done, total = self.progress()
        if not self.has_run():
            return "nothing"
        if done is None or total is None:
            return "a run"
        return (
            f"a finished run ({total} epochs)"
            if done >= total
            else f"a run at epoch {done} of {total}"
        )

    # -- writing ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def writer(self) -> Iterator[RunFolder]:
        """Hold the folder's lock (created if needed) for the block; remove the temporary
        files that killed writes left. A second writer gets one line naming the holder."""
        if self._lock_fd is not None:  # re-entered by the same writer
            yield self
            return
        created = not self.path.exists()
        make_folder(self.path)
        self._lock_fd = _acquire(self.path / LOCK)
        try:
            for stale in self.path.glob(f".*{_TMP}*"):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
            yield self
        finally:
            if self._fresh:  # a new run that saved nothing (it failed at once): leave no trace
                with contextlib.suppress(FileNotFoundError):
                    (self.path / CONFIG).unlink()
            self._fresh, self._pending_config = False, None
            fd, self._lock_fd = self._lock_fd, None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path / LOCK)  # while still held: no one else can hold it
            os.close(fd)
            if created:
                with contextlib.suppress(OSError):  # only if empty
                    self.path.rmdir()

    def begin(
        self,
        config: Mapping[str, Any],
        *,
        resume: bool,
        extendable: Mapping[str, Callable[[Any, Any], str | None]] | None = None,
        location: tuple[str, ...] = (),
        hint: str = "--resume",
    ) -> bool:
        """Start writing a run of `config` (inside `writer()`); True when it resumes from
        a checkpoint. Refuses to overwrite a run unless `resume`, and on resume refuses a
        config that differs from the saved one, naming the fields, except in `location`
        fields and in `extendable` ones whose check (saved value, new value) -> reason or
        None allows the change. A new run's config is written now (and removed again if the
        run saves nothing); a resumed run's with its first `save`."""
        self._need_lock()
        ours = jsonable(dict(config))
        saved = self.config()
        if not resume:
            if self.has_run():
                raise ApicalError(
                    f"{self.path} already holds {self.describe()}; continue it with {hint}, or "
                    "choose another folder"
                )
            write_json(self.path / CONFIG, ours)
            self._fresh = True
            return False
        if saved is None:
            if self.has_checkpoint():
                raise ApicalError(f"cannot resume {self.path}: its config.json is missing")
            raise ApicalError(f"nothing to resume: no run in {self.path}")
        differ = differences(saved, ours, location)
        refused = []
        for k in differ:
            check = (extendable or {}).get(k)
            reason = check(saved.get(k), ours.get(k)) if check is not None else "differs"
            if reason is not None:
                refused.append((k, reason))
        if refused:
            if all(r == "differs" for _, r in refused):
                parts = ", ".join(
                    f"{k} ({_short(saved.get(k))} there, {_short(ours.get(k))} now)"
                    for k, _ in refused
                )
                raise ApicalError(
                    f"cannot resume {self.path}: the config differs in {parts}; resume with the "
                    "run's own config, or start a new run in another folder"
                )
            k, reason = next((k, r) for k, r in refused if r != "differs")
            raise ApicalError(f"cannot resume {self.path}: {reason}")
        self._pending_config = ours
        return self.has_checkpoint()

    def save(self, state: dict[str, Any], rows: Mapping[str, list[dict[str, Any]]]) -> None:
        """Write the row streams, then the checkpoint with their lengths (so a resume keeps
        exactly the rows that belong to this state)."""
        self._need_lock()
        if self._pending_config is not None:
            write_json(self.path / CONFIG, self._pending_config)
            self._pending_config = None
        for stream, values in rows.items():
            self.write_rows(stream, values)
        buffer = io.BytesIO()
        torch.save({**state, "rows": {k: len(v) for k, v in rows.items()}}, buffer)
        atomic_write(self.path / CHECKPOINT, buffer.getvalue())

    def restore(
        self, device: torch.device | str = "cpu", read_only: bool = False
    ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        """The checkpoint's state and the rows that belong to it (later rows dropped from
        the files, unless `read_only`: a distributed run's other processes, which read the
        folder its lead writes)."""
        if not read_only:
            self._need_lock()
        state = self.checkpoint(device)
        counts = state.pop("rows", None)
        if not isinstance(counts, dict):
            raise ApicalError(
                f"checkpoint {self.path / CHECKPOINT} was written by an older apical and cannot "
                "be resumed by this one; start a new run"
            )
        rows = {}
        for stream, n in counts.items():
            kept = self.rows(stream)
            if len(kept) < n:
                raise ApicalError(
                    f"{self.rows_file(stream)} has {len(kept)} rows but the checkpoint "
                    f"needs {n}: the folder was edited; start a new run"
                )
            if len(kept) > n and not read_only:
                self.write_rows(stream, kept[:n])
            rows[stream] = kept[:n]
        return state, rows

    def write_rows(self, stream: str, rows: list[dict[str, Any]]) -> None:
        self._need_lock()
        atomic_write(self.rows_file(stream), "".join(dumps(r) + "\n" for r in rows).encode())

    def write_json(self, name: str, obj: Any) -> Path:
        self._need_lock()
        write_json(self.path / name, obj)
        return self.path / name

    def write_csv(self, name: str, rows: list[dict[str, Any]], columns: list[str]) -> Path:
        self._need_lock()
        write_csv(self.path / name, rows, columns)
        return self.path / name

    def tensorboard_folder(self) -> Path:
        """Where the run's TensorBoard events go (apical.tensorboard)."""
        self._need_lock()
        return self.path / TENSORBOARD

    def file(self, name: str) -> Path:
        """Where a figure or other file of the run goes (written by its own writer)."""
        self._need_lock()
        return self.path / name

    def _need_lock(self) -> None:
        """Every write goes through here: it needs the lock, and makes the run one that
        wrote something (kept even if it fails later)."""
        if self._lock_fd is None:
            raise RuntimeError(f"{self!r} is written outside `with folder.writer():`")  # a bug
        self._fresh = False


def differences(
    saved: Mapping[str, Any], ours: Mapping[str, Any], location: tuple[str, ...] = ()
) -> list[str]:
    """The keys whose values differ between two configs, `location` keys left out; folders
    (`PATH_KEYS`) are the same when they name the same folder from here, one written
    relative and the other absolute."""
    ours = jsonable(dict(ours))
    keys = set(ours) | set(saved)
    return sorted(k for k in keys if k not in location and not _same(k, ours.get(k), saved.get(k)))


PATH_KEYS = ("init_from",)  # config keys that name a folder


def _same(key: str, a: Any, b: Any) -> bool:
    if a == b:
        return True
    if key in PATH_KEYS and isinstance(a, str) and isinstance(b, str):
        return Path(a).resolve() == Path(b).resolve()
    return False


def _acquire(lock: Path) -> int:
    """flock the lock file (retrying if it was replaced in between); one clear line when
    another process holds it."""
    for _ in range(10):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise ApicalError(
                f"cannot write in {lock.parent} ({_reason(e)}); choose another folder"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ApicalError(
                f"run folder {lock.parent} is in use by {holder}; wait for it to finish or choose "
                "another folder"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}".encode(), 0)
            return fd
        os.close(fd)  # the holder removed it as we opened it: take the new one
    raise ApicalError(f"could not lock {lock.parent}: it keeps changing hands; try again")


def make_folder(path: Path) -> None:
    """mkdir -p, or one line saying why the folder cannot be made."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ApicalError(f"{path} is a file, not a folder; choose another folder") from None
    except NotADirectoryError:
        raise ApicalError(
            f"{path} lies under a file, not a folder; choose another folder"
        ) from None
    except OSError as e:
        raise ApicalError(f"cannot create {path} ({_reason(e)}); choose another folder") from None


def _fsync_folder(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else round(v, 6)
    return "" if v is None else v


def _short(v: Any) -> str:
    text = json.dumps(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or type(e).__name__
