"""What the browser gets: static files shipped in the package (no CDN; PBX hosts are often
offline)."""

from pathlib import Path

STATIC = Path(__file__).parent / "static"
TEMPLATES = Path(__file__).parent / "templates"
SWAGGER_UI = "vendor/swagger-ui-5.35.0"
