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


def run(
    stage: str,
    model,
    inputs=None,
    *,
    tokenizer=None,
    band=None,
    batch_size: int = 32,
    coords=None,
    sigma: float | None = None,
    coords_rule: str | None = None,
    max_tokens: int = 40,
    per_domain: int | None = None,
    bos: str = "auto",
    device: str = "cpu",
    dtype: str = "auto",
    progress: bool = True,
    **config,
):
    """Run the registered ``stage`` on ``model`` and ``inputs``; ``config`` are the stage
    Config's fields (``sinkscope <stage> --help`` lists them as flags), the rest the CLI's
    shared options (``band`` = ``--layers`` as ``(start, stop)``). A spec loads as the CLI
    loads it (``device``; ``dtype`` by the stage's rule, e.g. float32 for ``preset="paper"``);
    a model in memory stays where and as it is."""
    from .errors import SinkscopeError
    from .models.loading import SinkModel, load_model
    from .registry import get_stage
    from .stages.runner import RunOptions, compute_stage, open_model, prepare

    cls = get_stage(stage)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - names)
    if unknown:
        raise SinkscopeError(
            f"{stage} has no setting {', '.join(unknown)}; it takes "
            f"{', '.join(sorted(names)) or 'none'}"
        )
    if "max_tokens" in names:
        config.setdefault("max_tokens", max_tokens)
    cfg = cls(**config)
    opts = RunOptions(
        model=model if isinstance(model, str) else "(in memory)",
        device=device,
        dtype=dtype,
        band=tuple(band) if band else None,
        batch_size=batch_size,
        coords=coords,
        k_sigma=sigma,
        coords_rule=coords_rule,
        max_tokens=max_tokens,
        per_domain=per_domain,
        bos=bos,
        seed=getattr(cfg, "seed", 0),
        progress=progress,
        out=None,
    )
    prepare(cfg, opts)
    if isinstance(model, str):  # the CLI's load path, with the stage's dtype rule
        model = open_model(opts, need_forward=cfg.needs_forward)
        if tokenizer is not None:
            model.tokenizer = tokenizer
    elif not isinstance(model, SinkModel):
        model = load_model(model, tokenizer=tokenizer)
    if inputs is None or isinstance(inputs, str):
        inputs = _inputs(inputs or "default", model, opts, cfg)
    return compute_stage(cfg, model, inputs, opts)


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
