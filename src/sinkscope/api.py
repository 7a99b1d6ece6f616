"""The notebook API: run any registered stage on the model you hold, get its typed Result.

``sinkscope.measure / explain / intervene / compare / mitigate / shared_query (model, inputs,
**config)`` are :func:`run` with the stage's name; every Result has ``.frames()`` (its tables as
pandas DataFrames, by CSV name) and ``.summary()`` (its ``summary.json``). The numbers are the
CLI's: both go through :func:`sinkscope.stages.runner.compute_stage`.

``model`` is a :class:`~sinkscope.models.SinkModel`, a ``transformers.PreTrainedModel`` already in
memory (left on its device and dtype) or a spec (``"default"``, a hub id, a directory, a .gguf);
``inputs`` is a :class:`~sinkscope.data.TokenizedInputs`, an ``--inputs`` spec (tokenised with
the model's tokenizer and BOS convention, exactly as the CLI does) or None (the offline corpus).

>>> import sinkscope
>>> r = sinkscope.measure("default", "default", per_domain=4, progress=False)
>>> sorted(r.frames()), r.summary()["n_examples"]
(['metrics', 'per_layer'], 12)
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Sequence

    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .data import TokenizedInputs
    from .models import SinkModel
    from .stages.runner import StageResult


def run(
    stage: str,
    model: SinkModel | PreTrainedModel | str | Sequence[SinkModel | PreTrainedModel | str],
    inputs: TokenizedInputs | str | None = None,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    band: tuple[int, int] | None = None,
    batch_size: int = 32,
    coords: Sequence[int] | None = None,
    sigma: float | None = None,
    coords_rule: str | None = None,
    max_tokens: int = 40,
    per_domain: int | None = None,
    bos: str = "auto",
    short: str = "skip",
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "auto",
    device_map: str | None = None,
    progress: bool = True,
    **config: Any,
) -> StageResult:
    """Run the registered ``stage`` on ``model`` and ``inputs``.

    ``config`` are the stage Config's fields (``sinkscope <stage> --help`` lists them as flags;
    a text is parsed as its flag's would be: ``keys="0,1"``, ``strengths="0.5,0"``); the rest
    are the CLI's shared options (``band`` = ``--layers`` as ``(start, stop)``, ``seed`` =
    ``--seed``, ``short`` = ``--short``). A spec loads as the CLI loads it (``device``,
    ``device_map``; ``dtype`` by the stage's rule, e.g. float32 for ``preset="paper"``); a model
    in memory stays where and as it is. A stage over several models (``compare``,
    ``mitigate``) takes a list of them and combines their results, as ``--models`` does.
    """
    from .registry import get_stage
    from .stages.runner import RunOptions, compute_stage, prepare

    cls = get_stage(stage)
    shared = dict(tokenizer=tokenizer, band=band, batch_size=batch_size, coords=coords,
                  sigma=sigma, coords_rule=coords_rule, max_tokens=max_tokens,
                  per_domain=per_domain, bos=bos, short=short, seed=seed, device=device,
                  dtype=dtype, device_map=device_map, progress=progress)  # fmt: skip
    if isinstance(model, (list, tuple)):
        return _run_models(cls, model, inputs, shared, config)
    cfg = _config(cls, config, seed=seed, max_tokens=max_tokens)
    opts = RunOptions(
        model=model if isinstance(model, str) else "(in memory)",
        device=device, dtype=dtype, device_map=device_map, inputs=inputs if isinstance(
            inputs, str) else "default", band=tuple(band) if band else None,
        batch_size=batch_size, coords=coords, k_sigma=sigma, coords_rule=coords_rule,
        max_tokens=max_tokens, short=short, per_domain=per_domain, bos=bos, seed=seed,
        progress=progress, out=None,
    )  # fmt: skip
    prepare(cfg, opts)
    model = _model(model, opts, cfg, tokenizer)
    if inputs is None or isinstance(inputs, str):
        inputs = _inputs(inputs or "default", model, opts, cfg)
    return compute_stage(cfg, model, inputs, opts)


def _config(cls, config: dict, *, seed: int, max_tokens: int):
    """The stage's Config from keywords: unknown ones are one error; a text is parsed as its
    flag's; a text for a repeatable flag is one item; the run's seed / max_tokens fill fields
    named like them."""
    from .errors import SinkscopeError
    from .registry import RUN_FIELDS, field_option

    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise SinkscopeError(
            f"{cls.name} has no setting {', '.join(unknown)}; it takes "
            f"{', '.join(sorted(fields)) or 'none'}"
        )
    kw = {}
    for name, v in config.items():
        o = field_option(fields[name])
        if o is not None and o.action == "append" and isinstance(v, str):
            v = (v,)
        elif isinstance(v, list):
            v = tuple(v)
        kw[name] = o.value(v) if o is not None else v
    run = {"seed": seed, "max_tokens": max_tokens}
    kw |= {k: run[k] for k in RUN_FIELDS if k in fields and k not in config}
    return cls(**kw)


def _model(model, opts, cfg, tokenizer):
    """A spec through the CLI's load path (the stage's dtype rule); a model in memory as is."""
    from .models.loading import SinkModel, load_model
    from .stages.runner import open_model

    if isinstance(model, str):
        model = open_model(opts, need_forward=cfg.needs_forward)
        if tokenizer is not None:
            model.tokenizer = tokenizer
        return model
    if isinstance(model, SinkModel):
        return model
    return load_model(model, tokenizer=tokenizer)


def _run_models(cls, models, inputs, shared: dict, config: dict):
    """A stage over several models, one at a time, combined (``--models``)."""
    from .errors import SinkscopeError

    if not cls.multi_model:
        raise SinkscopeError(f"{cls.name} studies one model; pass one, not a list")
    if not models:
        raise SinkscopeError(f"{cls.name}: the list of models is empty")
    results = [run(cls.name, m, inputs, **shared, **config) for m in models]
    return type(results[0]).concat(results)


def _inputs(spec: str, model, opts, cfg):
    """An ``--inputs`` spec tokenised as the CLI does (None when the stage needs no forward pass
    and the model cannot run one, e.g. a partial checkpoint)."""
    from .data import load_inputs

    if not cfg.needs_forward and model.adapter.missing_tensors():
        return None
    return load_inputs(
        spec,
        model,
        max_tokens=opts.max_tokens,
        per_domain=opts.per_domain,
        bos=opts.bos,
        seed=opts.seed,
    )


def _stage_function(name: str):
    def fn(model, inputs=None, **kw):
        return run(name, model, inputs, **kw)

    fn.__name__ = fn.__qualname__ = name.replace("-", "_")
    fn.__doc__ = (
        f"Run the ``{name}`` stage (``sinkscope {name}``) on ``model`` and ``inputs``; "
        f"keywords as :func:`sinkscope.api.run`. Returns its Result (``.frames()``)."
    )
    return fn


measure = _stage_function("measure")
explain = _stage_function("explain")
intervene = _stage_function("intervene")
compare = _stage_function("compare")
mitigate = _stage_function("mitigate")
shared_query = _stage_function("shared-query")
