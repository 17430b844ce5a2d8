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
    assert client.get("/docs").status_code == 200
