"""ApdbConfig: YAML round trip, validation, and frozen settings checked on open."""

from __future__ import annotations

import pytest

from apdb import Apdb, ApdbConfig
from apdb.config import SkyIndexConfig
from apdb.errors import ApdbConfigError, ApdbConfigMismatchError


def test_yaml_round_trip(tmp_path):
    cfg = ApdbConfig(db_url="sqlite:///x.sqlite3", sky=SkyIndexConfig(max_ranges=32))
    assert ApdbConfig.from_yaml(cfg.to_yaml()) == cfg
    cfg.save(tmp_path / "c.yaml")
    assert ApdbConfig.load(tmp_path / "c.yaml") == cfg


def test_every_field_is_described():
    for model in (ApdbConfig, SkyIndexConfig):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"


@pytest.mark.parametrize(
    "text",
    ["db_url: [1, 2]", "bands: [u, q]", "sky: {index_order: 40}", "no_such_field: 1", "{{"],
)
def test_invalid_config_raises(text):
    with pytest.raises(ApdbConfigError):
        ApdbConfig.from_yaml(text)


def test_mismatched_frozen_setting_is_refused(apdb_url):
    Apdb.from_url(apdb_url).close()
    with pytest.raises(ApdbConfigMismatchError, match="index_order") as info:
        Apdb.from_config(ApdbConfig(db_url=apdb_url, sky=SkyIndexConfig(index_order=20)))
    assert info.value.differences["config:sky.index_order"] == ("20", "29")
    # Query-time settings may differ freely.
    Apdb.from_config(ApdbConfig(db_url=apdb_url, sky=SkyIndexConfig(max_ranges=8))).close()


def test_unsupported_urls():
    with pytest.raises(ApdbConfigError):
        Apdb.from_url("mysql://someone@somewhere/db")
    with pytest.raises(ApdbConfigError, match="psycopg"):
        Apdb.from_url("postgresql+psycopg2://someone@localhost/db")
