"""A run folder knows what it holds: the run's identity, one process at a time, no mixing of two runs.

The identity of a run is its resolved config minus the keys that may change when it resumes
(RESUMABLE_KEYS: how long to train, how to log and show progress, threads, where the data lives).
It is written to `<run>/identity.json` when the run starts, once its data is loaded, with the fingerprints
of its data files. Then:

- `resume=true` continues only a run with the same identity; otherwise it fails with one line naming
  the keys that differ. A completed run resumed with a larger `trainer.max_epochs` trains on. A data.root
  that now holds other files (same names, other contents), or a metrics.csv that lacks epochs the checkpoint
  holds, is refused too, naming the file.
- a fresh run into a folder that holds a run's results refuses, with the way out (a new folder, or
  `resume=true`), so old and new files never mix;
- a lock (`<run>/.lock`, filelock) stops a second process on the same folder;
- a sweep job finds its folder by its overrides, not its number (`job_subdir`, used by
  `hydra.sweep.subdir`), so a resumed sweep whose list changed continues the right runs.

Hydra writes `<run>/.hydra/` before the run starts; a refused run puts back the files of the run
the folder holds, so `.hydra/config.yaml` never disagrees with summary.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from bsstudy import RunFolderError
from bsstudy.config import MLP_TARGET, ROOT_RULES, check_value
from bsstudy.runfolder import RunFolder, checkpoint_epochs, resume_checkpoint, write_json

log = logging.getLogger(__name__)

IDENTITY_FILE, LOCK_FILE = RunFolder.IDENTITY, RunFolder.LOCK
# keys that may change when a run resumes: they change neither the data, the model nor the training steps
COMPOSED: dict[str, object] = {}  # key -> its value as composed, before a launcher set it (train/parallel.py)

RESUMABLE_KEYS = (
    "resume",
    "trainer.max_epochs",
    "trainer.progress_bar",
    "trainer.threads",
    "trainer.cuda_graph",  # the same steps replayed from a graph (on a CPU: uncaptured, rounding apart)
    "logger",
    "data.root",
    "data.download",
    "data.check_known",  # a check of the files, not what they hold
    "checkpoint.at_epochs",
)
HYDRA_FILES = ("config.yaml", "overrides.yaml", "hydra.yaml")


def is_resumable_key(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUMABLE_KEYS)


def flatten(tree, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def run_identity(cfg: DictConfig) -> dict:
    """The resolved config as {dotted key: value}, without the keys that may change on resume."""
    kept = OmegaConf.masked_copy(cfg, [k for k in cfg if not is_resumable_key(str(k))])
    identity = flatten(OmegaConf.to_container(kept, resolve=True)) | composed_values()
    return {k: v for k, v in identity.items() if not is_resumable_key(k)}


def composed_values() -> dict:
    """The values a launcher replaced for this job (a parallel sweep's GPU), as composed: a resumed job given
    another GPU is the same run."""
    return {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in COMPOSED.items()}


ADDED_SINCE = {"model._target_": MLP_TARGET}  # settings added since runs were recorded -> what those runs did


def differing_keys(recorded: dict, current: dict) -> list[str]:
    """'key: recorded -> current' for each key whose value differs (or that only one of them has). A key the
    recorded run lacks and the current config leaves null, or sets to what runs did before the key existed
    (ADDED_SINCE), is a setting added since: no difference."""
    missing = object()
    keys = sorted(set(recorded) | set(current))
    return [
        f"{k}: {recorded.get(k, '(absent)')!r} -> {current.get(k, '(absent)')!r}"
        for k in keys
        if recorded.get(k, missing) != current.get(k, missing)
        and not (k not in recorded and current[k] in (None, ADDED_SINCE.get(k)))
    ]


def read_json_named(path: Path, way_out: str) -> dict | None:
    """The JSON object in `path`, None if there is no such file; a corrupt one is a RunFolderError naming
    the file and `way_out`."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise RunFolderError(f"{path} is corrupt ({err}). {way_out}") from None


def read_identity(run_dir: Path) -> dict | None:
    return read_json_named(
        run_dir / IDENTITY_FILE,
        "It records which run the folder holds: restore it, or start the run in a new folder",
    )


def record_identity(cfg: DictConfig, run_dir: Path, data_files: dict | None = None) -> None:
    """Write <run>/identity.json: the identity, the fingerprints of the data files (train/data.py: file_fingerprint;
    None for a generated data set) and a copy of Hydra's files of the run now held."""
    folder = RunFolder(run_dir)
    files = {name: folder.hydra_file(name).read_text() for name in HYDRA_FILES if folder.hydra_file(name).exists()}
    record = {"identity": run_identity(cfg), "max_epochs": cfg.trainer.max_epochs, "data_files": data_files,
              "hydra_files": files}  # fmt: skip
    write_json(run_dir / IDENTITY_FILE, record)


def check_data_files(run_dir: Path, data_files: dict | None, continuing: bool) -> None:
    """A run that continues from a checkpoint goes on with the data it trained on: each data file's fingerprint
    must be the one identity.json records (data.root may move, the contents may not). Other contents under the same
    name are a RunFolderError naming the file; a record without fingerprints (an older bsstudy) resumes unchecked,
    with a log line."""
    record = read_identity(run_dir)
    if not continuing or data_files is None or record is None:  # no record: check_run_folder has said so
        return
    if "data_files" not in record:
        log.warning("resume=true: %s records no data fingerprints (an older bsstudy): the data files are not checked",
                    run_dir / IDENTITY_FILE)  # fmt: skip
        return
    for name, now in data_files.items():
        before = (record["data_files"] or {}).get(name)
        if before is not None and (before["shape"], before["blake2b"]) != (now["shape"], now["blake2b"]):
            restore_hydra_files(run_dir)
            raise RunFolderError(
                f"resume=true: {now['path']} is not the file this run trained on, {before['path']} (shape "
                f"{before['shape']}, blake2b {before['blake2b']}; now {now['shape']}, {now['blake2b']}). Point "
                "data.root at the run's data again, or start the run in a new folder"
            )


def restore_hydra_files(run_dir: Path) -> None:
    """Put back the .hydra/ files of the run the folder holds (Hydra has just overwritten them)."""
    recorded = read_identity(run_dir) or {}
    for name, text in recorded.get("hydra_files", {}).items():
        RunFolder(run_dir).hydra_file(name).write_text(text)


def held_results(run_dir: Path, summary: dict | None) -> list[str]:
    """The files that make the folder a run's: metrics, checkpoints, a summary of a run that trained."""
    folder = RunFolder(run_dir)
    found = [folder.METRICS] if folder.metrics_path.exists() else []
    found += [f"{folder.CHECKPOINTS}/{p.name}" for p in sorted(folder.checkpoints.glob("*.ckpt"))]
    if summary is not None and (summary.get("status") != "failed" or summary.get("epochs_completed")):
        found.append(f"summary.json ({summary.get('status')})")
    return found


def check_run_folder(cfg: DictConfig, run_dir: Path) -> dict | None:
    """Decide what this start does with the folder: None = train (fresh, or resume from last.ckpt); a summary =
    nothing to do (the run already ended). Raises RunFolderError naming the way out when the folder holds
    another run, or a run that this start would mix its files with."""
    check_value("resume", cfg.resume, ROOT_RULES["resume"])
    summary = RunFolder(run_dir).summary()
    recorded = read_identity(run_dir)
    if not cfg.resume:
        if held := held_results(run_dir, summary):
            restore_hydra_files(run_dir)
            raise RunFolderError(
                f"{run_dir} already holds a run ({', '.join(held)}); a fresh run does not mix its files with it. "
                "Use a new folder (hydra.run.dir=... or hydra.sweep.dir=...), or add resume=true to continue that run"
            )
        return None
    if not held_results(run_dir, summary):
        return None  # nothing trained yet (or it failed before training): resume=true starts the run afresh
    if recorded is None:
        log.warning("resume=true: %s has no %s (an older bsstudy); continuing without checking", run_dir, IDENTITY_FILE)
        check_rows_cover_checkpoint(run_dir)
        return None
    if differ := differing_keys(recorded["identity"], run_identity(cfg)):
        restore_hydra_files(run_dir)
        raise RunFolderError(
            f"resume=true: {run_dir} holds a run with another config ({'; '.join(differ)}); only "
            f"{', '.join(RESUMABLE_KEYS)} may change on resume. Start the new config in a new folder"
        )
    if summary is not None and (ended := ended_run(cfg, run_dir, summary, recorded)) is not None:
        return ended
    check_rows_cover_checkpoint(run_dir)
    return None


def ended_run(cfg: DictConfig, run_dir: Path, summary: dict, recorded: dict) -> dict | None:
    """The summary of a run that resume=true leaves as it is (diverged, or completed with no more epochs asked
    for), else None."""
    ended = summary.get("epochs_completed", 0)
    if summary.get("status") == "diverged":
        log.info("resume=true: %s diverged at epoch %d; its weights are not finite, nothing to resume", run_dir, ended)
        return summary
    # a completed run trains on only when asked for more epochs than it was started with (an early stop stays)
    if summary.get("status") == "completed" and cfg.trainer.max_epochs <= recorded.get("max_epochs", ended):
        log.info("resume=true: %s already completed %d epochs; nothing to do", run_dir, ended)
        return summary
    return None


def check_rows_cover_checkpoint(run_dir: Path) -> None:
    """metrics.csv has a row for every epoch the resume checkpoint holds: resuming keeps the rows before the
    checkpoint's epoch and appends the later ones, so a missing or shorter file would leave a run that looks shorter
    or starts late, silently. RunFolderError with the way out (restore the file, or a new folder)."""
    folder = RunFolder(run_dir)
    if (checkpoint := resume_checkpoint(folder.checkpoints)) is None:
        return
    epochs = checkpoint_epochs(checkpoint)
    logged = max((int(r["epoch"]) for r in folder.metrics() if r.get("epoch") is not None), default=None)
    if logged is not None and logged >= epochs:
        return
    if not folder.metrics_path.exists():
        what = "is missing"
    else:
        what = "has no rows" if logged is None else f"has rows up to epoch {logged} only"
    first = 0 if logged is None else logged + 1
    rowless = f"epoch {epochs}" if first == epochs else f"epochs {first} ... {epochs}"
    restore_hydra_files(run_dir)
    raise RunFolderError(
        f"cannot resume: {folder.metrics_path} {what}, but {checkpoint} holds {epochs} completed "
        f"epoch{'s' if epochs > 1 else ''}; resuming would leave {rowless} without a row. Restore "
        f"{folder.METRICS} (from a backup), or start the run in a new folder (or delete {run_dir} to train it again "
        "from the start)"
    )


@contextmanager
def locked_run_folder(run_dir: Path):
    """Hold <run>/.lock while the run trains; a second process on the same folder fails at once."""
    lock = FileLock(run_dir / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        restore_hydra_files(run_dir)
        raise RunFolderError(
            f"another process is running in {run_dir} (it holds {run_dir / LOCK_FILE}); wait for it to end, "
            "or give this run another folder (hydra.run.dir=... or hydra.sweep.dir=...)"
        ) from None
    try:
        yield
    finally:
        lock.release()


# --- sweep jobs find their folder by their overrides --------------------------------------------------


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def job_overrides(overrides) -> tuple[str, ...]:
    """A job's overrides that define its run (those of RESUMABLE_KEYS left out), sorted."""
    return tuple(sorted(str(o) for o in overrides if not is_resumable_key(override_key(str(o)))))


def folder_overrides(folder: Path) -> tuple[str, ...] | None:
    """The overrides of the run in `folder`; None when it has none (yet: a parallel job may be writing them)."""
    try:
        return job_overrides(OmegaConf.load(RunFolder(folder).hydra_file("overrides.yaml")))
    except Exception:  # missing, or half-written by a job running beside this one
        return None


def job_subdir(sweep_dir: str, num: int, overrides) -> str:
    """The sub-folder of a sweep job: the existing folder whose run has the same overrides (a resumed sweep);
    else the job number, as Hydra names it, when that folder is free; else a name made of the overrides.
    Registered as the resolver `bsstudy_job_subdir` for hydra.sweep.subdir."""
    mine = job_overrides(overrides)
    sweep = Path(sweep_dir)
    if sweep.is_dir():
        for folder in sorted(p for p in sweep.iterdir() if p.is_dir()):
            if folder_overrides(folder) == mine:
                return folder.name
    if not (sweep / str(num)).exists():
        return str(num)
    name = ",".join(mine).replace("/", "_") or "job"
    return name if len(name) <= 120 else f"{name[:110]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


OmegaConf.register_new_resolver("bsstudy_job_subdir", job_subdir, replace=True)
