"""Write .cog/openapi_schema.json from predict()'s signature, as `cog build` would.

    .venv/bin/python tools/write_openapi_schema.py          # write
    .venv/bin/python tools/write_openapi_schema.py --check  # exit 1 when the committed file is stale

The Cog server validates requests against this file and serves it at
/openapi.json; without it, it validates nothing (cog 0.23.1's coglet, checked here). We cannot run
`cog build` here (no Docker), so this script produces the same document.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / ".cog" / "openapi_schema.json"

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _base_type(annotation) -> type:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def input_schema(predict) -> tuple[dict, dict]:
    """The Input object schema and the enum schemas its choices refer to."""
    from cog import Path as CogPath

    properties, enums, required = {}, {}, []
    parameters = [p for p in inspect.signature(predict).parameters.values() if p.name != "self"]
    hints = typing.get_type_hints(predict)
    for order, parameter in enumerate(parameters):
        field = parameter.default
        kind = _base_type(hints[parameter.name])
        prop: dict = {}
        if field.choices:
            enums[parameter.name] = {"description": "An enumeration.", "enum": list(field.choices),
                                     "title": parameter.name, "type": _JSON_TYPES[kind]}
            prop["allOf"] = [{"$ref": f"#/components/schemas/{parameter.name}"}]
        else:
            prop["title"] = parameter.name.replace("_", " ").title()
            if kind is CogPath or kind is Path:
                prop.update(type="string", format="uri")
            else:
                prop["type"] = _JSON_TYPES[kind]
        if field.default is not None:
            prop["default"] = field.default
        elif typing.get_origin(hints[parameter.name]) is not typing.Union:
            required.append(parameter.name)
        if field.description:
            prop["description"] = field.description
        if field.ge is not None:
            prop["minimum"] = field.ge
        if field.le is not None:
            prop["maximum"] = field.le
        prop["x-order"] = order
        properties[parameter.name] = dict(sorted(prop.items()))
    schema = {"properties": properties, "required": required, "title": "Input", "type": "object"}
    return schema, enums


def _response(schema_ref: str) -> dict:
    return {"content": {"application/json": {"schema": {"$ref": schema_ref}}}, "description": "Successful Response"}


def _untyped(title: str) -> dict:
    return {"content": {"application/json": {"schema": {"title": title}}}, "description": "Successful Response"}


_VALIDATION = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
               "description": "Validation Error"}
_PREFER = {"in": "header", "name": "prefer", "required": False, "schema": {"title": "Prefer", "type": "string"}}
_ID = {"in": "path", "name": "prediction_id", "required": True, "schema": {"title": "Prediction ID", "type": "string"}}


def document(predict) -> dict:
    inputs, enums = input_schema(predict)
    schemas = {
        "HTTPValidationError": {"properties": {"detail": {"items": {"$ref": "#/components/schemas/ValidationError"},
                                                          "title": "Detail", "type": "array"}},
                                "title": "HTTPValidationError", "type": "object"},
        "Input": inputs,
        "Output": {"items": {"format": "uri", "type": "string"}, "title": "Output", "type": "array"},
        "PredictionRequest": {"properties": {
            "context": {"additionalProperties": {"type": "string"}, "title": "Context", "type": "object"},
            "created_at": {"format": "date-time", "title": "Created At", "type": "string"},
            "id": {"title": "Id", "type": "string"},
            "input": {"$ref": "#/components/schemas/Input"},
            "output_file_prefix": {"title": "Output File Prefix", "type": "string"},
            "webhook": {"format": "uri", "maxLength": 65536, "minLength": 1, "title": "Webhook", "type": "string"},
            "webhook_events_filter": {"default": ["start", "output", "logs", "completed"],
                                      "items": {"$ref": "#/components/schemas/WebhookEvent"}, "type": "array"},
        }, "title": "PredictionRequest", "type": "object"},
        "PredictionResponse": {"properties": {
            "completed_at": {"format": "date-time", "title": "Completed At", "type": "string"},
            "created_at": {"format": "date-time", "title": "Created At", "type": "string"},
            "error": {"title": "Error", "type": "string"},
            "id": {"title": "Id", "type": "string"},
            "input": {"$ref": "#/components/schemas/Input"},
            "logs": {"default": "", "title": "Logs", "type": "string"},
            "metrics": {"title": "Metrics", "type": "object"},
            "output": {"$ref": "#/components/schemas/Output"},
            "started_at": {"format": "date-time", "title": "Started At", "type": "string"},
            "status": {"$ref": "#/components/schemas/Status"},
            "version": {"title": "Version", "type": "string"},
        }, "title": "PredictionResponse", "type": "object"},
        "Status": {"description": "An enumeration.", "enum": ["starting", "processing", "succeeded", "canceled",
                                                              "failed"], "title": "Status", "type": "string"},
        "ValidationError": {"properties": {
            "loc": {"items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}, "title": "Location",
                    "type": "array"},
            "msg": {"title": "Message", "type": "string"},
            "type": {"title": "Error Type", "type": "string"},
        }, "required": ["loc", "msg", "type"], "title": "ValidationError", "type": "object"},
        "WebhookEvent": {"description": "An enumeration.", "enum": ["start", "output", "logs", "completed"],
                         "title": "WebhookEvent", "type": "string"},
        **enums,
    }
    paths = {
        "/": {"get": {"operationId": "root__get", "responses": {"200": _untyped("Response Root  Get")},
                      "summary": "Root"}},
        "/health-check": {"get": {"operationId": "healthcheck_health_check_get",
                                  "responses": {"200": _untyped("Response Healthcheck Health Check Get")},
                                  "summary": "Healthcheck"}},
        "/predictions": {"post": {
            "description": "Run a single prediction on the model", "operationId": "predict_predictions_post",
            "parameters": [_PREFER],
            "requestBody": {"content": {"application/json": {"schema": {
                "$ref": "#/components/schemas/PredictionRequest"}}}},
            "responses": {"200": _response("#/components/schemas/PredictionResponse"), "422": _VALIDATION},
            "summary": "Predict"}},
        "/predictions/{prediction_id}": {"put": {
            "description": "Run a single prediction on the model (idempotent creation).",
            "operationId": "predict_idempotent_predictions__prediction_id__put",
            "parameters": [_ID, _PREFER],
            "requestBody": {"content": {"application/json": {"schema": {
                "allOf": [{"$ref": "#/components/schemas/PredictionRequest"}], "title": "Prediction Request"}}},
                "required": True},
            "responses": {"200": _response("#/components/schemas/PredictionResponse"), "422": _VALIDATION},
            "summary": "Predict Idempotent"}},
        "/predictions/{prediction_id}/cancel": {"post": {
            "description": "Cancel a running prediction",
            "operationId": "cancel_predictions__prediction_id__cancel_post", "parameters": [_ID],
            "responses": {"200": _untyped("Response Cancel Predictions  Prediction Id  Cancel Post"),
                          "422": _VALIDATION},
            "summary": "Cancel"}},
        "/shutdown": {"post": {"operationId": "start_shutdown_shutdown_post",
                               "responses": {"200": _untyped("Response Start Shutdown Shutdown Post")},
                               "summary": "Start Shutdown"}},
    }
    return {"components": {"schemas": schemas}, "info": {"title": "Cog", "version": "0.1.0"},
            "openapi": "3.0.2", "paths": paths}


def render() -> str:
    sys.path.insert(0, str(ROOT))
    from predict import Predictor

    return json.dumps(document(Predictor.predict), sort_keys=True, indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not TARGET.is_file() or TARGET.read_text() != text:
            print(f"{TARGET} is stale: run tools/write_openapi_schema.py", file=sys.stderr)
            return 1
        return 0
    TARGET.parent.mkdir(exist_ok=True)
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
