from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse as StarletteJSONResponse


class JSONResponse(StarletteJSONResponse):
    """JSON rendered by orjson: keys stay in insertion order, UTF-8 left unescaped."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
