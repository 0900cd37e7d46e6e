"""The analysis of finished sweeps: runs grouped into configurations (``groups``, where the one
definition of a fixed-p baseline run lives), drift statistics and the fixed-p table (``stats``),
one module per figure family (``plots``), their layout and style, the paper figures drawn
from a YAML spec (``figures``), experiments side by side (``compare``), a study of many
experiment folders read as one table of cells (``regimes``, with ``regimes_mechanism`` for the
gradient split) and the TensorBoard export (``tensorboard_export``, which needs the optional
extra)."""
