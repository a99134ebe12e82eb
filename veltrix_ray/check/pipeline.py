"""Validation that runs the pipeline's transforms (on an empty batch, no network): what they
write fits pipeline.mode and pipeline.key. With config/validate.py's findings, what a run
checks before launch."""

from __future__ import annotations

from veltrix_ray.config.schema import VeltrixConfig
from veltrix_ray.config.validate import Finding, static_findings
from veltrix_ray.contracts import written
from veltrix_ray.errors import ConfigError
from veltrix_ray.transform import output_schema


def pipeline_findings(s: VeltrixConfig) -> list[Finding]:
    f: list[Finding] = []
    if not s.pipeline.columns:
        return f  # avro/protobuf: the columns come from the registry at launch (checked then)
    try:
        schema = written(output_schema(s))
    except ConfigError as exc:
        f.append(Finding("error", "pipeline", str(exc)))
        return f
    except Exception as exc:  # noqa: BLE001 - a user transform that fails on an empty batch
        f.append(Finding("error", "pipeline.transforms",
                         f"the transform chain fails on an empty batch: {type(exc).__name__}: "
                         f"{exc}"))
        return f
    if not schema.names:
        f.append(Finding("error", "pipeline.transforms", "no column is left to write"))
    if s.pipeline.mode == "upsert" and not s.pipeline.key:
        f.append(Finding("error", "pipeline.key", "upsert needs the key columns, e.g. "
                         "pipeline.key=[user_id]"))
    for k in s.pipeline.key:
        if k not in schema.names:
            f.append(Finding("error", "pipeline.key", f"{k!r} is not a written column "
                             f"({', '.join(schema.names)})"))
    if s.pipeline.mode == "append" and s.pipeline.key:
        f.append(Finding("warning", "pipeline.key", "is ignored in append mode"))
    return f


def launch_findings(s: VeltrixConfig) -> list[Finding]:
    """Everything known without the services: the config's own findings and the pipeline's."""
    return static_findings(s) + pipeline_findings(s)


def validate(s: VeltrixConfig) -> None:
    errors = [x for x in launch_findings(s) if x.level == "error"]
    if errors:
        raise ConfigError("Invalid configuration:\n  " + "\n  ".join(map(str, errors)))
