import re

from fastapi.testclient import TestClient


def test_openapi_lists_the_real_parameters_and_shapes(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    list_op = doc["paths"]["/api/v1/call-history"]["get"]
    names = [p["name"] for p in list_op["parameters"]]
    assert names == [
        "page", "per_page", "sort",
        "filter[src]", "filter[dst]", "filter[external_number]",
        "filter[duration]", "filter[conversation]", "filter[type]", "filter[status]",
        "filter[integration_status]", "filter[from]", "filter[to]",
    ]  # fmt: skip
    assert set(list_op["responses"]) == {"200", "400", "401", "403", "422"}
    schemas = doc["components"]["schemas"]
    assert list(schemas["CallIndex"]["properties"]) == [
        "id", "call_id", "date_time", "src", "dst", "external_number", "duration",
        "conversation", "type", "status", "recorded_file_url", "integration",
    ]  # fmt: skip
    assert "from" in schemas["PageMeta"]["properties"]
    post = doc["paths"]["/api/v1/call-history"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["items"] == {
        "$ref": "#/components/schemas/IngestCall"
    }
    assert "IngestCall" in schemas
    assert set(doc["paths"]) >= {
        "/api/v1/auth/login", "/api/v1/auth/me", "/api/v1/auth/logout",
        "/api/v1/auth/change-password", "/api/v1/call-history/{call}",
    }  # fmt: skip
    assert doc["security"] == [{"bearer": []}]
    assert doc["paths"]["/api/v1/auth/login"]["post"]["security"] == []


def test_docs_work_offline(client: TestClient) -> None:
    """Swagger UI's files come from the package: the page names no other host, and each file it
    names is served."""
    page = client.get("/docs")
    assert (page.status_code, page.headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert "http://" not in page.text and "https://" not in page.text
    assets = re.findall(r"""(?:src|href)=["'](/[^"']+)["']""", page.text)
    assert sorted(assets) == [
        "/static/vendor/swagger-ui-5.35.0/favicon-32x32.png",
        "/static/vendor/swagger-ui-5.35.0/swagger-ui-bundle.js",
        "/static/vendor/swagger-ui-5.35.0/swagger-ui.css",
    ]
    types = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert response.headers["content-type"].startswith(types[asset[asset.rindex(".") :]])
    assert "'/openapi.json'" in page.text or '"/openapi.json"' in page.text
    missing = client.get("/static/vendor/nothing.js")
    assert (missing.status_code, missing.json()) == (
        404,
        {"message": "The route static/vendor/nothing.js could not be found."},
    )
    assert client.get("/redoc").status_code == 404  # ReDoc would need a CDN; not served
