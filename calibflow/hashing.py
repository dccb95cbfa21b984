"""Content keys: short stable hashes of everything that determines a result."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

KEY_LENGTH = 16


def _is_presentation(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("presentation"))


def _strip_presentation(model: BaseModel, data: Any) -> Any:
    """``data`` (the JSON dump of ``model``) without the fields marked ``presentation`` (labels, units,
    styles), at any depth: they change how results look, never what they are."""
    for name, field in type(model).model_fields.items():
        key = field.alias or name
        if key not in data:
            continue
        if _is_presentation(field):
            del data[key]
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            _strip_presentation(value, data[key])
        elif isinstance(value, (list, tuple)):
            for v, d in zip(value, data[key], strict=True):
                if isinstance(v, BaseModel):
                    _strip_presentation(v, d)
        elif isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, BaseModel):
                    _strip_presentation(v, data[key][k])
    return data


def key_dump(model: BaseModel) -> Any:
    """The JSON dump of ``model`` as content keys see it: by alias, presentation fields left out."""
    return _strip_presentation(model, model.model_dump(mode="json", by_alias=True))


def _canonical(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return _canonical(key_dump(obj))
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float):
        return repr(obj)
    return obj


def content_key(*parts: Any) -> str:
    """Hex digest (16 characters) of the canonical JSON of ``parts``; equal content gives equal keys."""
    text = json.dumps([_canonical(p) for p in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def file_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Identity of an input file: absolute path, size (bytes) and modification time (ns); of a URL
    (``root://``, ``https://``) the server's stat (:func:`calibflow.io.remote.identity`)."""
    if "://" in os.fspath(path):
        from calibflow.io.remote import identity, is_remote

        if is_remote(path):
            return identity(os.fspath(path))
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
