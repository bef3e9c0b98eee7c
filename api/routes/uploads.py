"""coder/agentapi's `POST /upload`, per session: a file placed in the session's workspace.

The ingress never touches a workspace (they live on the sessions workers' volume): it hands the
file to ``services.sessions.input.upload``, which parks it for the session's host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from uuid import UUID

from litestar import Request, post
from litestar.datastructures import State, UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body
from pydantic import BaseModel

from api.auth import Principal
from api.state import resources
from api.tenancy import tenant_context
from services.sessions.input import MAX_UPLOAD_BYTES, upload
from services.sessions.lookup import find_session

# The body limit leaves room for the multipart framing around the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


@dataclass
class UploadForm:
    file: UploadFile


class Uploaded(BaseModel):
    ok: bool = True
    filePath: str


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
    row = await find_session(res, tenant_context(request.user), session_id)
    # One byte over the limit is enough to refuse the file.
    content = await data.file.read(MAX_UPLOAD_BYTES + 1)
    return Uploaded(filePath=await upload(res, row, data.file.filename, content))
