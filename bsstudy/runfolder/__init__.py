"""The run folder, the one contract between training and analysis: what a run leaves in it, named once here
(RunFolder), and how every file of it is written (atomically: write_json, write_table, checkpoints), and how
a set of files that only holds together is (written_whole: the report, whole or not at all).

    <run>/.hydra/config.yaml   the resolved config (Hydra)     <run>/metrics.csv    one row per epoch
    <run>/summary.json         written when the run has ended  <run>/checkpoints/   last.ckpt, epoch=<e>.ckpt
    <run>/probes/<name>/       each probe's files (bsstudy/probes/)

metrics.csv is rewritten whole (atomically) after every epoch, so it is never half-written and survives a
resume; summary.json is written once, atomically, when the run has ended. Training writes through this
module; the report, the geometry commands, the speed table and the bench read through it.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from bsstudy import WriteError

STATUSES = ("completed", "diverged", "failed", "interrupted")


def replace_atomically(path: Path, write) -> None:
    """Write `path` through a temporary file and rename it into place (readers never see half a file).
    A write that fails (a full disk) removes the temporary file and raises one WriteError naming `path`: an OSError,
    or the RuntimeError that torch.save raises when the disk is full ("file write failed", "unexpected pos")."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        with contextlib.suppress(OSError):  # a folder that refuses the write may refuse the removal too
            tmp.unlink(missing_ok=True)
        why = err.strerror if isinstance(err, OSError) and err.strerror else f"{type(err).__name__}: {err}"
        errno = err.errno if isinstance(err, OSError) else None
        raise WriteError(errno, f"could not write {path} ({why}); {path.name} is as it was") from err


def write_json(path: Path, obj: dict) -> None:
    replace_atomically(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


def write_table(path: Path, rows, columns: list[str] | None = None) -> None:
    """Write a table to the CSV file `path`, atomically: `rows` is a list of dicts (the header is `columns`,
    else every key in first-seen order; a missing cell is empty) or a pandas DataFrame. Every CSV file
    bsstudy writes goes through here."""
    if hasattr(rows, "to_csv"):
        replace_atomically(Path(path), lambda tmp: rows.to_csv(tmp, index=False))
        return
    header = columns or list(dict.fromkeys(k for row in rows for k in row))

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)

    replace_atomically(Path(path), write)


MANIFEST = "manifest.json"  # of a folder written whole: each file's size and sha256, renamed into place last
STAGING = ".writing-"  # <folder>/.writing-<pid>-<random>/: the files of a folder being written whole


class NotWritten(OSError):
    """Files written together (written_whole) that could not all be written. `filename` is the file as it would be
    in the folder; `kept` says whether the folder was left as it was (False only if renaming failed midway)."""

    def __init__(self, errno: int | None, strerror: str, filename: str, kept: bool):
        super().__init__(errno, strerror, filename)
        self.kept = kept


@contextmanager
def written_whole(folder: str | Path, owned: tuple[str, ...] = ()):
    """Write a set of files that only holds together (a report) into `folder`: whole, or not at all.

    The block writes the files into the folder it is given (a hidden staging folder inside `folder`, relative
    names as they will be). When it ends without an error, MANIFEST (each file's bytes and sha256) is written
    beside them; then the previous MANIFEST is removed, every file renamed into place and MANIFEST last; then
    the previous set's files that the new one lacks go (those its MANIFEST listed, and any under the sub-folders
    `owned`); other files in `folder` stay. Renames need no space, and SIGTERM and SIGINT wait until they are
    done. So an error in the block (a part that raises, a full disk, a read-only folder) leaves `folder` as it
    was, and so does a kill during it (its staging folder, removed by the next call, aside); only a SIGKILL
    during the renames leaves a mix, without MANIFEST: is_whole(folder) is then False. An OSError is raised as
    NotWritten naming the file in `folder`."""
    folder = Path(folder)
    created = not folder.exists()
    stage = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_abandoned_staging(folder)
        stage = Path(tempfile.mkdtemp(prefix=f"{STAGING}{os.getpid()}-", dir=folder))
        yield stage
        files = sorted(p for p in stage.rglob("*") if p.is_file())
        manifest = {str(p.relative_to(stage)): {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in files}
        write_json(stage / MANIFEST, {"complete": True, "files": manifest})
        with signals_held():
            move_into_place(stage, folder, list(manifest), owned)
    except NotWritten:
        raise
    except OSError as err:
        raise not_written(err, stage, folder, kept=True) from err
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # nothing was written: no folder either


def move_into_place(stage: Path, folder: Path, names: list[str], owned: tuple[str, ...]) -> None:
    """The renames of written_whole: the previous MANIFEST out, the new files in, MANIFEST last, stale files out."""
    previous = manifest_files(folder)
    (folder / MANIFEST).unlink(missing_ok=True)
    try:
        for name in names:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / name, folder / name)
        os.replace(stage / MANIFEST, folder / MANIFEST)
    except OSError as err:
        raise not_written(err, stage, folder, kept=False) from err
    stale = set(previous or {}) | {str(p.relative_to(folder)) for d in owned for p in (folder / d).rglob("*")}
    for name in sorted(stale - set(names) - {MANIFEST}):
        if (folder / name).is_file():
            (folder / name).unlink()


def not_written(err: OSError, stage: Path | None, folder: Path, kept: bool) -> NotWritten:
    """`err` (or the OSError it wraps, replace_atomically's) as about the file in `folder` that it was writing."""
    root = err.__cause__ if isinstance(err.__cause__, OSError) else err
    path = Path(root.filename or err.filename or folder)
    if stage is not None and path.is_relative_to(stage):
        path = folder / path.relative_to(stage)
        path = path.with_name(path.name.removesuffix(".tmp"))  # replace_atomically's temporary file
    elif path.name.startswith(STAGING):
        path = folder  # the staging folder could not be made: the folder takes no files
    return NotWritten(root.errno, root.strerror or str(root), str(path), kept)


def manifest_files(folder: Path) -> dict | None:
    """{name: {"bytes", "sha256"}} of folder/MANIFEST, None without a readable one."""
    try:
        return json.loads((folder / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_whole(folder: str | Path) -> bool:
    """The folder holds a set written by written_whole, every file of its MANIFEST present with its size."""
    files = manifest_files(Path(folder))
    if files is None:
        return False
    return all(
        (Path(folder) / n).is_file() and (Path(folder) / n).stat().st_size == f["bytes"] for n, f in files.items()
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def remove_abandoned_staging(folder: Path) -> None:
    """Staging folders of written_whole whose process is gone (killed while writing)."""
    for stage in folder.glob(f"{STAGING}*"):
        pid = stage.name.removeprefix(STAGING).split("-")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(stage, ignore_errors=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process
    return True


@contextmanager
def signals_held():
    """SIGTERM and SIGINT arrive after the block (the main thread's handlers run only there)."""
    held = (signal.SIGTERM, signal.SIGINT)
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class EpochCSVLogger(Logger):
    """A Lightning logger that keeps `<run_dir>/metrics.csv` (or another file) as one row per epoch.

    Unlike Lightning's CSVLogger it keeps the rows of an interrupted run when the run resumes
    (rows at or after a re-logged step are replaced), keeps columns in logging order, and
    rewrites the file atomically at every call.
    """

    def __init__(self, run_dir: str | Path, filename: str = "metrics.csv"):
        super().__init__()
        self.path = Path(run_dir) / filename
        self.rows = read_metrics(self.path) if self.path.exists() else []

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return ""

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass  # the full resolved config is in <run>/.hydra/config.yaml

    @rank_zero_only
    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        row = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        write_table(self.path, self.rows)


def read_metrics(path: Path) -> list[dict]:
    """metrics.csv as a list of dicts with numbers parsed (empty cells -> None)."""
    with path.open(newline="") as f:
        return [{k: parse_number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def parse_number(text: str | None) -> int | float | None:
    if text in ("", None):
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


class RunCheckpoints(Checkpoint):
    """After every epoch, `checkpoints/last.ckpt` (for resume); after the epochs in `at_epochs`,
    also `checkpoints/epoch=<e>.ckpt` (e counts completed epochs). Written atomically; the last.ckpt
    it replaces is kept as `previous.ckpt`, which resume falls back to when last.ckpt is unreadable.

    A `Checkpoint` subclass, so Lightning runs it after the other callbacks of the epoch end:
    the epoch's metrics row is logged before the checkpoint that includes the epoch is written.
    """

    def __init__(self, dirpath: str | Path, at_epochs: list[int], save_last: bool):
        self.dirpath = Path(dirpath)
        self.at_epochs = set(at_epochs)
        self.save_last = save_last

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        for name in checkpoint_names(trainer.current_epoch + 1, self.at_epochs, self.save_last):
            if trainer.is_global_zero:
                save_checkpoint_file(self.dirpath / name, lambda tmp: trainer.save_checkpoint(tmp, weights_only=False))
            else:  # DDP: the other processes join save_checkpoint's barrier; only rank 0 writes the file
                trainer.save_checkpoint(self.dirpath / f"{name}.tmp", weights_only=False)


def checkpoint_names(epoch: int, at_epochs, save_last: bool) -> list[str]:
    """The checkpoints written after `epoch` completed epochs: last.ckpt (save_last), epoch=<e>.ckpt (at_epochs)."""
    return (["last.ckpt"] if save_last else []) + ([f"epoch={epoch}.ckpt"] if epoch in set(at_epochs) else [])


def save_checkpoint_file(path: Path, write) -> None:
    """Write a checkpoint atomically with `write(tmp_path)`; the last.ckpt it replaces becomes previous.ckpt."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name == "last.ckpt" and path.exists():
        os.replace(path, path.parent / "previous.ckpt")
    replace_atomically(path, write)


def is_readable_checkpoint(path: Path) -> bool:
    """The file loads as a Lightning checkpoint (a 0-byte or cut file does not)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # EOFError, UnpicklingError, RuntimeError (zip archive), OSError ...
        return False
    return isinstance(checkpoint, dict) and "state_dict" in checkpoint


def resume_checkpoint(dirpath: Path) -> Path | None:
    """The checkpoint resume=true continues from: last.ckpt, or previous.ckpt (one epoch earlier) when last.ckpt
    is missing or unreadable; None when there is none yet. Neither readable: RunFolderError naming both."""
    from bsstudy import RunFolderError

    last, previous = dirpath / "last.ckpt", dirpath / "previous.ckpt"
    candidates = [p for p in (last, previous) if p.exists()]
    for path in candidates:
        if is_readable_checkpoint(path):
            if path == previous:
                logging.getLogger(__name__).warning("%s is missing or unreadable; resuming from %s", last, previous)
            return path
    if candidates:
        raise RunFolderError(
            f"cannot resume: {' and '.join(map(str, candidates))} cannot be read (empty or cut short). Delete "
            f"{dirpath} to train this run again from the start (resume=true), or start it in a new folder"
        )
    return None


def checkpoint_epochs(path: Path) -> int:
    """The completed epochs a checkpoint holds: Lightning saves the 0-based index of the epoch that ended (a packed
    run's checkpoints too), so epoch + 1; metrics.csv has a row for each of them (epoch 1 ... epoch + 1)."""
    return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"]) + 1


def load_weights(net: torch.nn.Module, checkpoint: Path) -> torch.nn.Module:
    """Load the `net.*` entries of a Lightning checkpoint of StudyModule into `net`."""
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    return net


class RunFolder:
    """One run's folder: where each of its files is, and reading them. Readers raise on a corrupt file (the
    report catches that per run and lists it); a file not written yet reads as None."""

    HYDRA, SUMMARY, METRICS, CHECKPOINTS, PROBES = ".hydra", "summary.json", "metrics.csv", "checkpoints", "probes"
    CONFIG = f"{HYDRA}/config.yaml"
    IDENTITY, LOCK = "identity.json", ".lock"  # which run it holds, and who holds it (bsstudy/runfolder/identity.py)

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def summary_path(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def identity_path(self) -> Path:
        return self.path / self.IDENTITY

    @property
    def lock_path(self) -> Path:
        return self.path / self.LOCK

    def hydra_file(self, name: str) -> Path:
        """.hydra/<name>: config.yaml (the resolved config), overrides.yaml (what was typed), hydra.yaml."""
        return self.path / self.HYDRA / name

    def probe_dir(self, name: str) -> Path:
        return self.path / self.PROBES / name

    def is_run(self) -> bool:
        """It holds a resolved config, a summary or metrics (a run still going may lack some)."""
        return any(p.exists() for p in (self.config_path, self.summary_path, self.metrics_path))

    def config(self):
        """The resolved config (an OmegaConf DictConfig, interpolations unresolved); FileNotFoundError without."""
        from omegaconf import OmegaConf

        if not self.config_path.is_file():
            raise FileNotFoundError(f"{self.path} is not a bsstudy run folder: no {self.config_path}")
        return OmegaConf.load(self.config_path)

    def summary(self, strict: bool = True) -> dict | None:
        """summary.json, or None when the run wrote none (not started yet, or killed). A corrupt file is a
        RunFolderError naming it and the way out; with strict=False it reads as None (readers that list runs)."""
        from bsstudy import RunFolderError

        if not self.summary_path.exists():
            return None
        try:
            return json.loads(self.summary_path.read_text())
        except ValueError as err:
            if not strict:
                return None
            way_out = "Delete it: resume=true then continues from checkpoints/last.ckpt"
            raise RunFolderError(f"{self.summary_path} is corrupt ({err}). {way_out}") from None

    def metrics(self) -> list[dict]:
        return read_metrics(self.metrics_path) if self.metrics_path.exists() else []

    def write_summary(self, summary: dict) -> None:
        write_json(self.summary_path, summary)

    def merge_probe_summary(self, name: str, numbers: dict) -> None:
        """Add `numbers` to summary.json under probes.<name> (as the probe would have), atomically."""
        summary = self.summary() or {}
        summary.setdefault("probes", {})[name] = numbers
        self.write_summary(summary)


def is_run_folder(path: Path) -> bool:
    return RunFolder(path).is_run()


def run_folders(path: Path) -> list[Path]:
    """[path] for a run folder, else its sub-folders that are runs (a sweep's), job numbers in numeric order.
    A path that is no folder is a FolderError naming it."""
    if is_run_folder(path):
        return [path]
    if not path.is_dir():
        from bsstudy import FolderError

        raise FolderError(f"{path} is not a folder: give a sweep folder (multirun/<date>/<time>) or a run folder")
    runs = [p for p in path.iterdir() if p.is_dir() and is_run_folder(p)]
    return sorted(runs, key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))


def runs_of(path: str | Path) -> list[RunFolder]:
    """The runs of a sweep folder (or [the run] for a run folder), in job order."""
    return [RunFolder(p) for p in run_folders(Path(path))]
