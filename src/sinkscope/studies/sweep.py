"""``sinkscope sweep``: one question along the study's axes: models (and training checkpoints),
lengths, content regimes and input seeds, each cell the paper's interventions.

Every cell (model × length × content × seed) is computed once by the stage machinery
(``run_interventions`` with the cell's :class:`~sinkscope.analysis.facts.CircuitFacts`) and
cached under ``DIR/cells/`` by a key of everything it depends on (its settings, sinkscope's
version, a hash of its model's files and of its inputs' file: :func:`~.sweep_cells.cell_key`),
so a rerun (or a run stopped halfway) recomputes nothing already done, and a model or input file
changed since is computed again; a damaged cached cell is computed again with a warning. The driver writes every file, whichever backend ran
the cells: ``local`` (one process, sequential) or ``ray`` (one task per model, retried), so
the two give the same ``sweep.csv``.

>>> cfg = SweepConfig(models=("default",), lengths=(40, 128), contents=("natural", "random"), seeds=(0, 1))
>>> len(cfg.grid()), cfg.grid()[0]
(8, Cell(model='default', length=40, content='natural', seed=0))
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SinkscopeError

if TYPE_CHECKING:
    import os

    from ..models import SinkModel


BACKENDS = ("local", "ray")
from .sweep_result import SWEEP_COLUMNS, TABLE1_COLUMNS, SweepResult  # noqa: E402,F401

CELL_FORMAT = 2  # 2: keyed by the model's and inputs' files and sinkscope's version


@dataclass(frozen=True)
class Cell:
    model: str
    length: int
    content: str
    seed: int


@dataclass
class SweepConfig:
    """The grid and what every cell shares (the sweep's own settings, in every cell key)."""

    models: tuple[str, ...] = ("default",)
    lengths: tuple[int, ...] = (40,)
    contents: tuple[str, ...] = ("natural",)
    seeds: tuple[int, ...] = (0,)
    inputs: str = "default"
    per_domain: int | None = None
    preset: str = "paper"  # paper: the ten interventions (a)..(j); none: the baseline only
    bos: str = "auto"
    band: tuple[int, int] | None = None
    batch_size: int = 32
    device: str = "cpu"
    dtype: str = "auto"  # --dtype; with --preset paper, auto loads float32 (the preset decides: interventions.presets)
    device_map: str | None = None  # --device-map auto
    backend: str = "local"
    address: str | None = None  # an existing Ray cluster (--address); None: a local Ray instance
    retries: int = 2  # Ray: times a failed task is retried before its cells are reported failed

    def check(self) -> None:
        from ..data.spec import check_contents
        from ..interventions.presets import get_preset
        from ..models.options import check_device_map, check_dtype

        check_dtype(self.dtype)
        check_device_map(self.device_map, self.device)
        if not self.models:
            raise SinkscopeError("--models is empty; pass e.g. --models default,packaged:smollm2")
        if len(set(self.models)) < len(self.models):
            raise SinkscopeError(
                f"--models {','.join(self.models)} names a model twice; give each once"
            )
        if not self.lengths or any(t < 4 for t in self.lengths):
            raise SinkscopeError(
                f"--lengths {','.join(map(str, self.lengths))}: give token counts of at least 4, e.g. 40,256"
            )
        if not self.seeds or any(s < 0 for s in self.seeds):
            raise SinkscopeError(
                "--seeds: give non-negative integers, e.g. 0,1,2 (0 is the inputs' own selection)"
            )
        check_contents(self.contents)
        get_preset(self.preset)
        if self.backend not in BACKENDS:
            raise SinkscopeError(f"--backend {self.backend} is unknown; use local or ray")
        if self.address is not None and self.backend != "ray":
            raise SinkscopeError("--address names a Ray cluster; use it with --backend ray")
        if self.per_domain is not None and self.per_domain < 1:
            raise SinkscopeError(f"--per-domain {self.per_domain} must be at least 1")
        if self.batch_size < 1:
            raise SinkscopeError(f"--batch-size {self.batch_size} must be at least 1")

    def grid(self) -> list[Cell]:
        """Every cell, in the order of the tables: model, length, content, seed."""
        return [
            Cell(m, t, c, s)
            for m in self.models
            for t in self.lengths
            for c in self.contents
            for s in self.seeds
        ]

    def shared(self) -> dict:
        """What every cell's result depends on besides its own coordinates and files."""
        from .. import __version__
        from ..interventions.presets import get_preset

        return {
            "version": __version__,
            "inputs": self.inputs,
            "per_domain": self.per_domain,
            "preset": self.preset,
            "bos": self.bos,
            "band": list(self.band) if self.band else None,
            "dtype": get_preset(self.preset).dtype(self.dtype),
            "format": CELL_FORMAT,
        }


from .sweep_cells import (  # noqa: E402,F401
    cell_inputs,
    cell_key,
    fingerprints,
    key_fields,
    read_cell,
    run_cell,
    training_step,
)


def _load(
    spec: str, device: str, threads: int | None, dtype: str = "auto", device_map: str | None = None
):
    import torch

    from ..stages.runner import RunOptions, open_model

    if threads:
        torch.set_num_threads(
            threads
        )  # the driver's count: Ray workers would otherwise use 1 (bit-identical sums)
    return open_model(RunOptions(model=spec, device=device, dtype=dtype, device_map=device_map))


def cell_result(model: SinkModel, cell: Cell, shared: dict, batch_size: int) -> dict:
    """``{"rows": [...], "seconds": s, "loaded": SinkModel.record()}``, or ``{"error": message}`` for a
    cell that failed with a sinkscope error (a length this model cannot take, too few texts):
    reported, not cached."""
    t0 = time.perf_counter()
    try:
        rows = run_cell(model, cell, shared, batch_size=batch_size)
        return {
            "rows": rows,
            "seconds": round(time.perf_counter() - t0, 2),
            "loaded": model.record(),
        }
    except SinkscopeError as e:
        return {"error": str(e)}


def run_group(
    spec: str,
    cells: list[Cell],
    shared: dict,
    *,
    device: str = "cpu",
    batch_size: int = 32,
    threads: int | None = None,
    device_map: str | None = None,
) -> dict[str, dict]:
    """All cells of one model (loaded once, in ``shared["dtype"]``), ``{cell key: cell_result}``: one Ray task."""
    _die_once_for_tests()
    model = _load(spec, device, threads, shared["dtype"], device_map)
    return {cell_key(shared, c): cell_result(model, c, shared, batch_size) for c in cells}


def _die_once_for_tests() -> None:
    """Fault injection for the retry test: with ``SINKSCOPE_SWEEP_DIE_ONCE=PATH`` the first task
    to get here creates PATH and kills its own process (as an OOM kill or a lost node would)."""
    path = os.environ.get("SINKSCOPE_SWEEP_DIE_ONCE")
    if path:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(137)


def _describe(cell: Cell) -> str:
    return f"{cell.model} @ {cell.length} tokens, {cell.content}, seed {cell.seed}"


def _run_local(cfg: SweepConfig, shared: dict, todo: dict[str, list[Cell]]):
    """Each model loaded once, its cells yielded one at a time (each is cached as it finishes)."""
    for spec, cells in todo.items():
        try:
            model = _load(spec, cfg.device, None, shared["dtype"], cfg.device_map)
        except SinkscopeError as e:
            yield spec, {"__task__": {"error": str(e)}}
            continue
        for c in cells:
            yield spec, {cell_key(shared, c): cell_result(model, c, shared, cfg.batch_size)}


def _run_ray(cfg: SweepConfig, shared: dict, todo: dict[str, list[Cell]]):
    """One Ray task per model (its cells), asking for the CPUs / GPU it runs on, retried
    ``cfg.retries`` times; results come back to the driver as they finish."""
    try:
        import ray
    except ImportError:
        raise SinkscopeError(
            "--backend ray needs ray: pip install 'sinkscope[ray]' (or use --backend local)"
        ) from None
    import torch

    if not ray.is_initialized():
        try:
            ray.init(
                address=cfg.address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                **({} if cfg.address else {"num_cpus": os.cpu_count() or 1}),
            )
        except Exception as e:  # a wrong --address, a cluster that does not answer
            raise SinkscopeError(
                f"--backend ray could not start or reach Ray{f' at {cfg.address}' if cfg.address else ''} "
                f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); check --address"
            ) from None
    threads = torch.get_num_threads()
    gpus = 1 if cfg.device.startswith("cuda") else 0
    task = ray.remote(
        num_cpus=threads,
        num_gpus=gpus,
        max_retries=cfg.retries,
        retry_exceptions=[RuntimeError, OSError],
    )(run_group)
    pending = {
        task.remote(
            spec,
            cells,
            shared,
            device=cfg.device,
            batch_size=cfg.batch_size,
            threads=threads,
            device_map=cfg.device_map,
        ): spec
        for spec, cells in todo.items()
    }
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        spec = pending.pop(done[0])
        try:
            yield spec, ray.get(done[0])
        except Exception as e:  # retries exhausted: report this model's cells, keep the others
            yield (
                spec,
                {
                    "__task__": {
                        "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                    }
                },
            )


def _check(cfg: SweepConfig, out: str | os.PathLike[str]) -> Path:
    """Every check before any work: the settings, then (torch-free) each model's spec and sizes
    and the output folder, then what needs the loaders. Returns ``out`` resolved."""
    from ..io import check_owned
    from ..stages.runner import RunOptions, preflight

    cfg.check()
    opts = RunOptions(
        device=cfg.device,
        dtype=cfg.dtype,
        device_map=cfg.device_map,
        band=cfg.band,
        max_tokens=min(cfg.lengths),  # a longer length a model cannot take is a recorded n/a cell
        batch_size=cfg.batch_size,
    )
    preflight(opts, models=cfg.models, length_flag="--lengths")
    from ..data.readers import read_examples
    from ..data.spec import parse_spec

    if "natural" in cfg.contents and parse_spec(cfg.inputs)[0] in ("text", "jsonl", "paper-csv"):
        read_examples(cfg.inputs)  # a missing or malformed file is one line, before --out is made
    out = check_owned(out, "sweep")  # only a folder sinkscope marked as a sweep is reused
    from ..models.loading import precheck_model, resolve_device

    resolve_device(cfg.device)
    for spec in cfg.models:
        precheck_model(spec)
    return out


def run_sweep(
    cfg: SweepConfig, out: str | os.PathLike[str], *, figures: bool = True, progress: bool = True
) -> SweepResult:
    """Expand the grid, compute the cells not cached in ``out/cells`` (local or Ray), write the
    tables, figures and report. Resumable: a cell is never recomputed."""
    from ..io import claim_dir

    out = _check(cfg, out)
    made = not out.exists()
    claim_dir(out, "sweep")
    try:
        return _sweep(cfg, out, figures, progress)
    except SinkscopeError:
        cells = out / "cells"
        if made and (not cells.is_dir() or not any(cells.iterdir())):
            import shutil

            shutil.rmtree(out, ignore_errors=True)  # exit 2 leaves nothing this run made
        raise


def _sweep(cfg: SweepConfig, out: Path, figures: bool, progress: bool) -> SweepResult:
    from tqdm.auto import tqdm

    from ..io import exclusive_dir, write_json_atomic

    t0 = time.perf_counter()
    with exclusive_dir(out, "sinkscope sweep"):
        cells_dir = out / "cells"
        cells_dir.mkdir(exist_ok=True)
        shared = cfg.shared() | {"fingerprints": fingerprints(cfg)}
        grid = cfg.grid()
        path = lambda c: cells_dir / f"{cell_key(shared, c)}.json"  # noqa: E731
        records = {c: rec for c in grid if (rec := read_cell(path(c), c)) is not None}
        todo: dict[str, list[Cell]] = {}
        for c in grid:
            if c not in records:
                todo.setdefault(c.model, []).append(c)
        cached = len(records)  # reused from cells/ as they are
        computed = 0
        runner = _run_ray if cfg.backend == "ray" else _run_local
        failed = {}
        bar = tqdm(
            total=sum(map(len, todo.values())),
            desc="sweep cells",
            unit="cell",
            disable=not progress,
        )
        for spec, results in runner(cfg, shared, todo):
            if "__task__" in results:
                for c in todo[spec]:
                    failed.setdefault(_describe(c), results["__task__"]["error"])
                continue
            for c in todo[spec]:
                r = results.get(cell_key(shared, c))
                if r is None:
                    continue
                if "error" in r:
                    failed[_describe(c)] = r["error"]
                else:  # the driver writes every cell, whichever backend computed it
                    records[c] = key_fields(shared, c) | r
                    write_json_atomic(path(c), records[c])
                    computed += 1
                bar.update(1)
        bar.close()
        rows, loaded = [], {}
        for c in grid:
            if c in records:
                rows += records[c]["rows"]
                if "loaded" in records[c]:
                    loaded.setdefault(c.model, records[c]["loaded"])
        import pandas as pd

        frame = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
        if frame.empty:
            raise SinkscopeError(
                "no cell of the sweep could be computed: "
                + "; ".join(f"{k}: {v}" for k, v in list(failed.items())[:3])
            )
        frame["bos_attention"] = frame["bos_attention"].astype(float)
        result = SweepResult(
            frame, cfg, failed, time.perf_counter() - t0, loaded, cached=cached, computed=computed
        )
        result.write(out, figures=figures)
        return result
