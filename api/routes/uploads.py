"""coder/agentapi's `POST /upload`, per session: a file placed in the session's workspace.

The ingress never touches a workspace (they live on the sessions workers' volume). It parks the file in
Redis and queues an ``upload`` input; the session's host writes it before any later input, so a message
that names the answered path always finds the file there.
"""

from __future__ import annotations

import base64
import re
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated
from uuid import UUID

from litestar import Request, post
from litestar.datastructures import State, UploadFile
from litestar.enums import RequestEncodingType
from litestar.exceptions import ClientException, ValidationException
from litestar.params import Body
from pydantic import BaseModel

from api.auth import Principal
from api.routes.sessions import ACTIVE, find_session
from api.state import resources
from events.payloads import Upload
from events.session_state import queue_input
from schemas.settings import UPLOADS_DIR

# coder/agentapi's limit; the body limit leaves room for the multipart framing around the file.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# Parked files expire if no host ever places them (the session died and was never recovered).
PARKED_SECONDS = 3600
# Spaces too: agents pass paths to shells, and a path that needs quoting is one they get wrong.
UNSAFE = re.compile(r"[^\w.\-]")
# File systems allow 255 bytes a name; the host writes ``.<name>.partial`` first.
MAX_NAME_BYTES = 200


@dataclass
class UploadForm:
    file: UploadFile


class Uploaded(BaseModel):
    ok: bool = True
    filePath: str


def safe_name(filename: str | None) -> str:
    """The file's own name, with no directory and nothing a shell or a terminal would trip on."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    name = UNSAFE.sub("_", unicodedata.normalize("NFC", name.strip()))
    if not name.strip("."):
        raise ValidationException(
            "the file needs a name", extra=[{"key": "file", "message": "filename is missing or empty"}]
        )
    return _within_bytes(name, MAX_NAME_BYTES)


def _within_bytes(name: str, limit: int) -> str:
    """``name`` cut to ``limit`` UTF-8 bytes, keeping a short extension: 200 times "é" (400 bytes) was
    accepted and the host's ``.<name>.partial`` then exceeded the file system's 255-byte names."""
    if len(name.encode()) <= limit:
        return name
    suffix = PurePosixPath(name).suffix
    suffix = suffix if len(suffix.encode()) <= 16 else ""
    stem = name[: len(name) - len(suffix)].encode()[: limit - len(suffix.encode())]
    return stem.decode(errors="ignore") + suffix


@post(
    "/api/v1/sessions/{session_id:uuid}/upload",
    tags=["sessions"],
    status_code=200,
    request_max_body_size=MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES,
)
async def upload_file(
    session_id: UUID,
    data: Annotated[UploadForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    request: Request[Principal, str, State],
    state: State,
) -> Uploaded:
    """Place a file (multipart field `file`, at most 10 MiB) in the session's workspace under `uploads/`;
    the answer names its absolute path as the agent sees it."""
    res = resources(state)
    row = await find_session(state, request.user, session_id)
    if row.status not in ACTIVE:
        raise ClientException(f"the session has {row.status}", status_code=409)
    name = safe_name(data.file.filename)
    content = await data.file.read(MAX_UPLOAD_BYTES + 1)
    if len(content) > MAX_UPLOAD_BYTES:
        raise ClientException(
            f"files are limited to {MAX_UPLOAD_BYTES} bytes",
            status_code=413,
            extra={"limit_bytes": MAX_UPLOAD_BYTES},
        )
    key = res.names.session_upload(session_id, secrets.token_hex(8))
    await res.redis.set(key, base64.b64encode(content).decode(), ex=PARKED_SECONDS)
    await queue_input(res.redis, res.names, session_id, Upload(key=key, name=name))
    path = res.settings.workspace_of(row.org_id, row.user_id, row.id) / UPLOADS_DIR / name
    return Uploaded(filePath=str(path))
