"""No change to `schemas/*.avsc` that a schema registry would refuse: BACKWARD against the released set.

The registry (docker-compose: SCHEMA_REGISTRY_SCHEMA_COMPATIBILITY_LEVEL=backward)
refuses a new schema that cannot read data written with the previous one; so a
producer deployed with such a change would fail on its first record. This check
refuses it in CI first, with Apache Avro's own reader/writer compatibility checker,
against `schemas/released/` (copied there at each release; see its README).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from alpr.schemas.codec import SCHEMA_DIR, AvroSchema, load_schemas, registry_schema

RELEASED = SCHEMA_DIR / "released"
CURRENT = load_schemas()
BASELINE = load_schemas(RELEASED)


def backward_problems(reader: dict, writer: dict) -> list[str]:
    """Why `reader` (the new schema) cannot read data written with `writer` (the released one); [] if it can."""
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer)))
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    return [f"{m} at {loc}" for m, loc in zip(result.messages, result.locations)] or ["incompatible"]


def _expanded(schema: AvroSchema) -> dict:
    return json.loads(registry_schema(schema))  # what the codec registers: the registry compares exactly this


def test_released_baseline_is_complete() -> None:
    assert BASELINE, f"no released schemas under {RELEASED}"
    assert set(BASELINE) <= set(CURRENT), f"contracts removed since release: {sorted(set(BASELINE) - set(CURRENT))}"
    assert all(p.suffix == ".avsc" or p.name == "README.md" for p in RELEASED.iterdir())


@pytest.mark.parametrize("name", sorted(BASELINE))
def test_every_schema_reads_what_its_released_version_wrote(name: str) -> None:
    problems = backward_problems(_expanded(CURRENT[name]), _expanded(BASELINE[name]))
    assert not problems, f"{name} is not BACKWARD compatible with schemas/released: {problems}"


def _field(schema: dict, name: str) -> dict:
    return next(f for f in schema["fields"] if f["name"] == name)


def _changed(edit) -> dict:
    schema = copy.deepcopy(_expanded(CURRENT["alpr.v1.PlateRead"]))
    edit(schema)
    return schema


@pytest.mark.parametrize("edit, compatible", [
    (lambda s: s["fields"].append({"name": "lane", "type": ["null", "int"], "default": None}), True),
    (lambda s: s["fields"].append({"name": "lane", "type": "int"}), False),          # new field, no default
    (lambda s: _field(s, "plate").update(type="int"), False),                        # type changed
    (lambda s: _field(s, "confidence").update(type="float"), False),                 # double -> float narrows
    (lambda s: s["fields"].remove(_field(s, "model_version")), True),                # readers ignore it
    (lambda s: _field(s, "frame_id").update(type="string", default=None), False),    # null no longer readable
], ids=["add-with-default", "add-without-default", "retype", "narrow", "drop-field", "drop-null"])
def test_the_check_refuses_what_a_registry_would(edit, compatible: bool) -> None:
    writer = _expanded(BASELINE["alpr.v1.PlateRead"])
    assert (not backward_problems(_changed(edit), writer)) is compatible


def test_a_removed_enum_symbol_is_refused() -> None:
    writer = _expanded(BASELINE["alpr.v1.HotlistEntry"])
    reader = copy.deepcopy(_expanded(CURRENT["alpr.v1.HotlistEntry"]))
    reason = _field(reader, "reason")["type"]
    reason["symbols"] = [s for s in reason["symbols"] if s != "AMBER_ALERT"]
    reason.pop("default", None)
    assert backward_problems(reader, writer)


def test_canonical_form_would_have_refused_an_added_field() -> None:
    """Why the codec registers the full schema: the canonical form loses the default a new field needs."""
    new = _changed(lambda s: s["fields"].append({"name": "lane", "type": ["null", "int"], "default": None}))
    from fastavro.schema import to_parsing_canonical_form

    assert not backward_problems(new, _expanded(BASELINE["alpr.v1.PlateRead"]))
    assert backward_problems(json.loads(to_parsing_canonical_form(new)), _expanded(BASELINE["alpr.v1.PlateRead"]))


def test_released_readme_says_how_to_cut_a_release() -> None:
    assert "cp schemas/*.avsc schemas/released/" in (RELEASED / "README.md").read_text()
    assert Path(RELEASED / "README.md").exists()


@pytest.mark.parametrize("name", sorted(CURRENT))
def test_what_the_codec_registers_is_plain_avro_a_registry_can_parse(name: str) -> None:
    """Self-contained (each named type defined at first use), no fastavro-internal keys."""
    text = registry_schema(CURRENT[name])
    assert "__fastavro" not in text and "__named_schemas" not in text
    assert avro.schema.parse(text).fullname == name
