"""The docs page works offline, and what the demo prints is what the README shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.demo import DEMO_KEY
from api.main import create_app
from core.settings import ApiSettings

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_docs_page_loads_every_asset_from_the_api_itself(tmp_path: Path) -> None:
    app = create_app(ApiSettings(lake_url=str(tmp_path), api_keys=SecretStr("k" * 40)))
    with TestClient(app) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        refs = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
        assert refs, page.text
        external = [r for r in refs if not r.startswith("/")]
        assert external == [], f"the docs page loads {external} from outside"
        assert "cdn" not in page.text.lower()
        for ref in refs:
            asset = client.get(ref)
            assert asset.status_code == 200, ref
            assert len(asset.content) > 100, ref
        bundle = client.get("/docs/assets/swagger-ui-bundle.js").text
        assert "SwaggerUIBundle" in bundle
        assert client.get("/openapi.json").json()["openapi"].startswith("3.1")


def test_readme_examples_use_the_key_the_demo_accepts() -> None:
    readme = (ROOT / "README.md").read_text()
    keys = set(re.findall(r"X-API-Key: ([\w-]+)", readme))
    keys |= set(re.findall(r"api_key=([\w-]+)", readme))
    assert keys == {DEMO_KEY}, keys
    accepted = ApiSettings().keys()
    assert DEMO_KEY in accepted  # the default key of `python -m api` too
