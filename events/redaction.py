"""What a credential looks like in text, and its replacement: applied to audit details before they
reach the bus (``events.audit``) and to every log record (``services.observability``)."""

from __future__ import annotations

import re

REDACTED = "[redacted]"

# What a secret looks like in a log line: an Authorization header value, a JWT, a provider key,
# or a key=value pair whose key says it is a secret.
_SECRET_PATTERNS = (
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    re.compile(r"\b(sk|pk|rk|ghp|gho|xox[abp])[-_][A-Za-z0-9_-]{12,}"),
    re.compile(
        r"(?i)([\"']?\b[\w-]*(?:token|secret|password|api[_-]?key|authorization)[\w-]*[\"']?\s*[:=]\s*[\"']?)"
        r"([^\s\"',}&]{4,})"
    ),
)


# The fewest characters any of the patterns matches (``token:abcd``): shorter text is returned as
# it is without running them. Every audit record's role and most log arguments are that short.
SHORTEST_SECRET = 10


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``[redacted]``."""
    if len(text) < SHORTEST_SECRET:
        return text
    for pattern in _SECRET_PATTERNS:
        if pattern.groups >= 2:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        else:
            text = pattern.sub(lambda m: _keep_scheme(m.group(0)), text)
    return text


def _keep_scheme(match: str) -> str:
    scheme, _, rest = match.partition(" ")
    return f"{scheme} {REDACTED}" if rest and scheme.lower() in {"bearer", "basic"} else REDACTED
