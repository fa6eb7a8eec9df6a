"""Defaults shared by the API and the CLI (kept import-light for fast `--help`)."""

# The exact cleanups run when no pipeline is named; compression passes are opt-in. The fusions
# run after the cleanups that expose their idioms, so a traced module and its ONNX export (which
# the ONNX frontend fuses on import) end in the same graph.
DEFAULT_PIPELINE = (
    "fold-bn,fold-constants,eliminate-identity,fuse-linear-bias,fuse-gelu,fuse-layer-norm,eliminate-dead-code"
)
DEFAULT_TARGET = "x86"
DEFAULT_PIPELINE_NAME = "default"  # `-p default` / pipeline="default" names DEFAULT_PIPELINE


def pipeline_text(pipeline: str | None) -> str:
    """The pipeline text to parse: None or 'default' is DEFAULT_PIPELINE; '' is no passes."""
    if pipeline is None or pipeline.strip() == DEFAULT_PIPELINE_NAME:
        return DEFAULT_PIPELINE
    return pipeline
