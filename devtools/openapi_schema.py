"""Write .cog/openapi_schema.json from predict.py, as `cog build` does.

The coglet server validates inputs and serves /openapi.json only when this file exists, and `cog build`
(a Go binary that needs Docker) is what normally writes it. This script reads the predictor with Cog's
own Python inspector and lays the result out the way Cog's generator (pkg/schema/openapi_spec.go) does:
choices as enum components referenced by allOf, Optional inputs nullable, `None` defaults kept only
on nullable inputs, ge/le as minimum/maximum, and the fixed prediction envelope.

Usage: python scripts/write_openapi_schema.py [--predictor predict.py:Predictor]
                                             [--out .cog/openapi_schema.json]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

VALIDATION_ERROR_REF = {"$ref": "#/components/schemas/HTTPValidationError"}


def title_case(name: str) -> str:
    return " ".join(part[:1].upper() + part[1:] for part in name.split("_"))


def constraints(field: Any) -> dict[str, Any]:
    """An input's bounds, lengths, pattern and deprecation, in Cog's key names and order."""
    from cog import _adt as adt

    # Cog's inspector keeps bounds as floats; an integer input's bounds are written as integers.
    bound = int if field.type.primitive is adt.PrimitiveType.INTEGER else float
    values = {
        "minimum": None if field.ge is None else bound(field.ge),
        "maximum": None if field.le is None else bound(field.le),
        "minLength": field.min_length,
        "maxLength": field.max_length,
        "pattern": field.regex,
        "deprecated": True if field.deprecated else None,
    }
    return {key: value for key, value in values.items() if value is not None}


def input_schema(info: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Input component and the enum components of its choice inputs."""
    from cog import _adt as adt

    properties: dict[str, Any] = {}
    enums: dict[str, Any] = {}
    required: list[str] = []
    for name, field in info.inputs.items():
        prop: dict[str, Any] = {"x-order": field.order}
        json_type = field.type.primitive.json_type()
        if field.choices is not None:
            enums[name] = {
                "title": name,
                "description": "An enumeration.",
                "enum": list(field.choices),
                "type": json_type.get("type", "string"),
            }
            prop["allOf"] = [{"$ref": f"#/components/schemas/{name}"}]
        else:
            prop["title"] = title_case(name)
            prop.update(field.type.json_type())
        nullable = field.type.repetition in (adt.Repetition.OPTIONAL, adt.Repetition.OPTIONAL_REPEATED)
        has_default = _has_default(field)
        if has_default and field.default is None and not nullable:
            has_default = False
        if not has_default and field.type.repetition in (adt.Repetition.REQUIRED, adt.Repetition.REPEATED):
            required.append(name)
        if has_default:
            prop["default"] = field.type.json_encode(field.default) if field.default is not None else None
        if nullable:
            prop["nullable"] = True
        if field.description is not None:
            prop["description"] = field.description
        prop.update(constraints(field))
        properties[name] = prop
    schema: dict[str, Any] = {"title": "Input", "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema, enums


def _has_default(field: Any) -> bool:
    """Whether the input declares a default (Cog stores a dataclass Field when there is none)."""
    from dataclasses import MISSING, Field

    default = field.default
    if isinstance(default, Field):
        return default.default is not MISSING or default.default_factory is not MISSING
    return True


def openapi_document(info: Any, version: str) -> dict[str, Any]:
    inputs, enums = input_schema(info)
    output = info.output.json_type()
    ok_any = {"description": "Successful Response", "content": {"application/json": {"schema": {}}}}
    invalid = {
        "description": "Validation Error",
        "content": {"application/json": {"schema": VALIDATION_ERROR_REF}},
    }
    schemas: dict[str, Any] = {"Input": inputs, "Output": output, **enums}
    schemas["PredictionRequest"] = {
        "title": "PredictionRequest",
        "type": "object",
        "properties": {
            "id": {"title": "Id", "type": "string"},
            "input": {"$ref": "#/components/schemas/Input"},
        },
    }
    schemas["PredictionResponse"] = {
        "title": "PredictionResponse",
        "type": "object",
        "properties": {
            "input": {"$ref": "#/components/schemas/Input"},
            "output": {"$ref": "#/components/schemas/Output"},
            "id": {"title": "Id", "type": "string"},
            "version": {"title": "Version", "type": "string"},
            "created_at": {"title": "Created At", "type": "string", "format": "date-time"},
            "started_at": {"title": "Started At", "type": "string", "format": "date-time"},
            "completed_at": {"title": "Completed At", "type": "string", "format": "date-time"},
            "status": {"title": "Status", "type": "string"},
            "error": {"title": "Error", "type": "string"},
            "logs": {"title": "Logs", "type": "string"},
            "metrics": {"title": "Metrics", "type": "object"},
        },
    }
    schemas["Status"] = {
        "title": "Status",
        "description": "An enumeration.",
        "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
        "type": "string",
    }
    schemas["HTTPValidationError"] = {
        "title": "HTTPValidationError",
        "type": "object",
        "properties": {
            "detail": {
                "title": "Detail",
                "type": "array",
                "items": {"$ref": "#/components/schemas/ValidationError"},
            }
        },
    }
    schemas["ValidationError"] = {
        "title": "ValidationError",
        "required": ["loc", "msg", "type"],
        "type": "object",
        "properties": {
            "loc": {
                "title": "Location",
                "type": "array",
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            },
            "msg": {"title": "Message", "type": "string"},
            "type": {"title": "Error Type", "type": "string"},
        },
    }
    paths = {
        "/": {"get": {"summary": "Root", "operationId": "root__get", "responses": {"200": ok_any}}},
        "/health-check": {
            "get": {
                "summary": "Healthcheck",
                "operationId": "healthcheck_health_check_get",
                "responses": {"200": ok_any},
            }
        },
        "/predictions": {
            "post": {
                "summary": "Predict",
                "description": "Run a single prediction on the model",
                "operationId": "predict_predictions_post",
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/PredictionRequest"}}
                    }
                },
                "responses": {
                    "200": {
                        "description": "Successful Response",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/PredictionResponse"}
                            }
                        },
                    },
                    "422": invalid,
                },
            }
        },
        "/predictions/{prediction_id}/cancel": {
            "post": {
                "summary": "Cancel",
                "operationId": "cancel_predictions__prediction_id__cancel_post",
                "parameters": [
                    {
                        "required": True,
                        "schema": {"title": "Prediction Id", "type": "string"},
                        "name": "prediction_id",
                        "in": "path",
                    }
                ],
                "responses": {"200": ok_any, "422": invalid},
            }
        },
    }
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": version},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def build(predictor_ref: str) -> dict[str, Any]:
    import cog
    from cog._inspector import create_predictor

    module_file, _, class_name = predictor_ref.partition(":")
    info = create_predictor(Path(module_file).stem, class_name)
    return openapi_document(info, cog.__version__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictor", default="predict.py:Predictor")
    parser.add_argument("--out", type=Path, default=ROOT / ".cog" / "openapi_schema.json")
    args = parser.parse_args()
    document = build(args.predictor)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Written whole, then renamed: a server starting meanwhile (tests start several at once) reads the old
    # file or the new one, never half of one.
    partial = args.out.with_name(f".{args.out.name}.{os.getpid()}")
    partial.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
