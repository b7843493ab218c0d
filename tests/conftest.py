"""Shared helpers: compose the real config tree in-process, run the real CLI in a subprocess, write tiny IDX files.

Markers (registered in pyproject.toml) are also given from what a test does, so `make test-fast`
(`-m "not slow and not cli"`) needs no list to keep up to date: a test that, itself or through a
fixture, starts a process (`run_cli`, `subprocess`) is `cli`; one that trains a model (`train(`,
`trainer.fit`) or reads the real data set (`shared_data`) is `slow`.
"""

from __future__ import annotations

import contextlib
import gzip
import inspect
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from bsstudy import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]


def offline_data() -> Path:
    """The offline data folder beside the project; from a git worktree elsewhere, $BSSTUDY_DATA when it holds it."""
    beside = ROOT.parent / "shared" / "data"
    given = Path(os.environ.get("BSSTUDY_DATA", beside))
    return given if not (beside / "FashionMNIST").is_dir() and (given / "FashionMNIST").is_dir() else beside


SHARED_DATA = offline_data()
FAST = ["trainer.progress_bar=false"]


def compose_run(run_dir: Path, overrides: list[str]) -> DictConfig:
    """The config `python -m bsstudy <overrides>` would run, with its output folder set to run_dir."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*FAST, *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def run_cli(
    args: list[str], cwd: Path, timeout: int = 300, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m bsstudy <args>` as a user would, with no terminal and no network login. `env`: variables to
    set (None: to unset), e.g. {"HYDRA_FULL_ERROR": None} for the output a user sees."""
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1", **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}
    proc = subprocess.run(
        [sys.executable, "-m", "bsstudy", *args, *FAST],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"bsstudy exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
        )
    return proc


def offline_data() -> Path | None:
    """The offline data folder beside the project (Fashion-MNIST complete, MNIST test set), else $BSSTUDY_DATA's
    (a checkout elsewhere, e.g. a git worktree); None without either."""
    for folder in (SHARED_DATA, Path(os.environ.get("BSSTUDY_DATA") or SHARED_DATA)):
        if (folder / "FashionMNIST" / "raw").is_dir():
            return folder
    return None


@pytest.fixture
def shared_data() -> Path:
    """The offline data folder (offline_data)."""
    if (folder := offline_data()) is None:
        pytest.skip(f"no offline Fashion-MNIST at {SHARED_DATA} or $BSSTUDY_DATA (CI and the dev machines have it)")
    return folder


RAW = "FashionMNIST/raw"


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion_mnist(root, gz=True, **replace) -> dict:
    """Tiny Fashion-MNIST files (20 train, 10 test images) under <root>/FashionMNIST/raw, gzipped or not; `replace`
    gives another array for x_train, y_test, ... Returns their paths."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (20, 28, 28)),
        "y_train": rng.integers(0, 10, 20),
        "x_test": rng.integers(0, 256, (10, 28, 28)),
        "y_test": rng.integers(0, 10, 10),
    } | replace
    stems = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}  # fmt: skip
    (root / RAW).mkdir(parents=True)
    paths = {}
    for key, array in arrays.items():
        path = root / RAW / (stems[key] + (".gz" if gz else ""))
        raw = idx_bytes(np.asarray(array), 2049 if key.startswith("y") else 2051)
        path.write_bytes(gzip.compress(raw) if gz else raw)
        paths[key] = path
    return paths


CLI_CALLS = ("run_cli(", "subprocess", "Popen(")
SLOW_CALLS = ("train(", ".fit(", "shared_data")


def sources_of(item) -> str:
    """The source of a test function and of every fixture it uses (fixtures of fixtures included)."""
    functions = [item.function]
    for name in getattr(item, "fixturenames", []):
        for fixture in item._fixtureinfo.name2fixturedefs.get(name, ()):
            functions.append(fixture.func)
    texts = []
    for function in functions:
        with contextlib.suppress(OSError, TypeError):  # a builtin fixture (tmp_path ...): nothing of ours inside
            texts.append(inspect.getsource(function))
    return "\n".join(texts)


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        source = sources_of(item)
        if any(call in source for call in CLI_CALLS):
            item.add_marker(pytest.mark.cli)
        if any(call in source for call in SLOW_CALLS):
            item.add_marker(pytest.mark.slow)
