"""Defaults shared by the API and the CLI (kept import-light for fast `--help`)."""

# The exact cleanups run when no pipeline is named; compression passes are opt-in. The fusions
# run after the cleanups that expose their idioms, so a traced module and its ONNX export (which
# the ONNX frontend fuses on import) end in the same graph.
DEFAULT_PIPELINE = (
    "fold-bn,fold-constants,eliminate-identity,fuse-linear-bias,fuse-gelu,fuse-layer-norm,eliminate-dead-code"
)
DEFAULT_TARGET = "x86"
