"""Content keys: short stable hashes of everything that determines a result."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from pydantic import BaseModel

KEY_LENGTH = 16


def _canonical(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return _canonical(obj.model_dump(mode="json", by_alias=True))
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
    """Identity of an input file: absolute path, size (bytes) and modification time (ns)."""
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
