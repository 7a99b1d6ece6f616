"""The switches of sinkscope's trainable GPT (``models/sinkgpt.py``), importable without torch:
the CLI builds ``sinkscope train``'s options from them before anything heavy loads."""

POSITIONS = ("learned", "rotary", "none")
NORMALISERS = ("softmax", "off_by_one", "gated", "sink_logit")
