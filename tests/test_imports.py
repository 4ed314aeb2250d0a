"""Partner feeds: validated whole before anything is published; deterministic ids make re-imports harmless."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from alpr.warehouse import imports
from alpr.core import kafka
from alpr.warehouse import sink
from alpr.cli import cli
from alpr.core.settings import settings as cached_settings
from alpr.core.topics import READS, TOPICS
from alpr.schemas import PlateRead

JPEG = b"\xff\xd8\xff\xe0partner-crop\xff\xd9"
GOOD_CSV = (
    "plate,time,camera,lat,lon,heading,image\n"
    "7abc-123,2026-03-01T10:00:00Z,12,38.58,-121.49,90,crop.jpg\n"
    "4XYZ999,2026-03-01T03:00:00-07:00,12,38.58,-121.49,,base64:" + base64.b64encode(JPEG).decode() + "\n"
    "5DEF456,2026-03-02T08:30:00.250+00:00,14,38.60,-121.50,,\n"
)


@pytest.fixture
def alpr(settings, monkeypatch):
    monkeypatch.setenv("ALPR_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setenv("ALPR_DATA_DIR", str(settings.data_dir))
    cached_settings.cache_clear()
    from alpr.schemas import Codec
    from tests.people import PASSWORD, publish_user

    publish_user(settings, Codec(), "feed-admin", role="ADMINISTRATOR")  # imports are an administrator's job
    yield lambda *args: CliRunner().invoke(cli, [*args, "--user", "feed-admin", "--password-stdin"],
                                           input=f"{PASSWORD}\n", catch_exceptions=False)
    cached_settings.cache_clear()


def published(settings, codec, agency: str) -> list[PlateRead]:
    out = []
    for p in range(TOPICS[READS].partitions):
        for m in kafka.read_to_end(settings, READS, p, idle=0.3):
            r = codec.decode(m.value(), PlateRead)
            if r.agency == agency:
                out.append(r)
    return out


def test_csv_rows_become_reads(tmp_path) -> None:
    (tmp_path / "crop.jpg").write_bytes(JPEG)
    feed = tmp_path / "feed.csv"
    feed.write_text(GOOD_CSV)
    reads = imports.parse(feed, "SDPD")
    first = reads[0]
    assert (first.plate, first.camera_id, first.agency, first.model_version, first.frame_id) == \
        ("7ABC123", "SDPD:12", "SDPD", "import:SDPD", None)
    assert first.captured_at == datetime(2026, 3, 1, 10, tzinfo=timezone.utc)
    assert reads[1].captured_at == datetime(2026, 3, 1, 10, tzinfo=timezone.utc)  # -07:00 kept as given, in UTC
    assert first.crop_jpeg == JPEG and reads[1].crop_jpeg == JPEG and reads[2].crop_jpeg is None
    assert first.position.heading_deg == 90 and reads[1].position.heading_deg is None
    again = imports.parse(feed, "SDPD")
    assert [r.read_id for r in again] == [r.read_id for r in reads]  # deterministic
    assert imports.parse(feed, "OTHER")[0].read_id != first.read_id
    assert imports.parse(feed, "SDPD", camera_prefix="sd-")[0].camera_id == "sd-12"


def test_jsonl_rows_become_reads(tmp_path) -> None:
    feed = tmp_path / "feed.jsonl"
    feed.write_text(json.dumps({"plate": "8GHI789", "time": "2026-04-01T00:00:00Z", "camera": "c1",
                                "lat": 34.0, "lon": -118.2, "state": "CA", "confidence": 0.8}) + "\n\n")
    [r] = imports.parse(feed, "LAPD")
    assert (r.plate, r.plate_state, r.confidence, r.camera_id) == ("8GHI789", "CA", 0.8, "LAPD:c1")


def test_bad_rows_reject_the_whole_file_with_line_numbers(alpr, settings, codec, tmp_path, unique) -> None:
    feed = tmp_path / "bad.csv"
    feed.write_text(
        "plate,time,camera,lat,lon\n"
        "7ABC123,2026-03-01T10:00:00Z,1,38.5,-121.4\n"
        "7ABC124,2026-03-01 10:00:00,1,38.5,-121.4\n"        # line 3: no timezone
        "7ABC125,2026-03-01T10:00:00Z,1,38.5,-121.4\n"
        "!!!,2026-03-01T10:00:00Z,1,38.5,-121.4\n"           # line 5: no plate left
        "7ABC126,2026-03-01T10:00:00Z,1,95.0,-121.4\n")      # line 6: latitude out of range
    agency = f"P{unique}"
    result = alpr("reads", "import", str(feed), "--agency", agency)
    assert result.exit_code != 0
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("alpr: error: bad.csv line 3: time '2026-03-01 10:00:00' has no timezone")
    assert "3 bad rows in all (lines 3, 5, 6)" in line and "nothing was published" in line
    assert published(settings, codec, agency) == []


@pytest.mark.parametrize("content, message", [
    ("plate,time,camera,lat\n", "header lacks lon"),
    ("plate,time,camera,lat,lon,speed\n", "unknown column 'speed'"),
    ("plate,time,camera,lat,lon,image\n7ABC123,2026-03-01T10:00:00Z,1,38,-121,base64:bm90IGpwZWc=\n",
     "image is not a JPEG"),
    ("plate,time,camera,lat,lon\n7ABC123,2999-03-01T10:00:00Z,1,38,-121\n", "in the future"),
    ("plate,time,camera,lat,lon\n7ABC123,2026-03-01T10:00:00Z,1,38,-121,extra\n", "line 2: more fields"),
])
def test_file_level_problems(tmp_path, content, message) -> None:
    feed = tmp_path / "f.csv"
    feed.write_text(content)
    with pytest.raises(imports.ImportRejected, match=message):
        imports.parse(feed, "X")


def test_import_publishes_and_reimport_is_stored_once(alpr, settings, codec, store, tmp_path, unique) -> None:
    (tmp_path / "crop.jpg").write_bytes(JPEG)
    feed = tmp_path / "feed.csv"
    feed.write_text(GOOD_CSV)
    agency = f"P{unique}"
    for _ in range(2):
        result = alpr("reads", "import", str(feed), "--agency", agency)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["published"] == 3
    reads = published(settings, codec, agency)
    assert len(reads) == 6 and len({r.read_id for r in reads}) == 3
    sink.write_new(store, "alpr", sink.READS_SPEC, reads[:3])
    sink.write_new(store, "alpr", sink.READS_SPEC, reads[3:])
    assert store.scalar("SELECT count() FROM alpr.reads") == 3
