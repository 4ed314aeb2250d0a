"""Evidence packages: held reads and their images with a SHA-256 manifest that catches any change."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from alpr.schemas import Codec

from alpr.warehouse import evidence
from alpr.warehouse import holds
from alpr.core import kafka
from alpr.warehouse import sink
from alpr.audit.trail import AuditLog, read_events
from alpr.cli import cli
from alpr.core.errors import AlprError
from tests.records import read

NOW = datetime.now(timezone.utc)


@pytest.fixture
def package(settings, codec, store, unique, tmp_path):
    audit = AuditLog(settings, codec, "test-evidence")
    reads = [read(i).model_copy(update={"read_id": f"{unique}-{i}", "captured_at": NOW - timedelta(hours=i),
                                        "crop_jpeg": b"\xff\xd8" + bytes([i]) * 50 if i != 1 else None})
             for i in range(4)]
    sink.write_new(store, "alpr", sink.READS_SPEC, reads)
    case = f"CASE-{unique}"
    holds.place(settings, audit, kafka.Publisher(settings, codec, "t"), case=case, reason="evidence", user="sgt1",
                read_ids=[r.read_id for r in reads[:3]])
    out = tmp_path / "usb" / case
    summary = evidence.export(store, settings, codec, audit, case=case, out=out, user="records1")
    return summary, out, audit


def test_export_writes_a_package_that_verifies(package, settings, codec, unique) -> None:
    summary, out, audit = package
    assert (summary["rows"], summary["images"]) == (3, 2)
    rows = [json.loads(line) for line in (out / "reads.jsonl").read_text().splitlines()]
    assert sorted(r["read_id"] for r in rows) == [f"{unique}-{i}" for i in range(3)]
    with_image = [r for r in rows if r["image"]]
    assert len(with_image) == 2 and all((out / r["image"]).read_bytes()[:2] == b"\xff\xd8" for r in with_image)
    assert all(r["captured_at"].endswith("Z") for r in rows)
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["case_number"], manifest["exported_by"], manifest["rows"]) == (f"CASE-{unique}", "records1", 3)
    assert [(h["placed_by"], h["reason"]) for h in manifest["holds"]] == [("sgt1", "evidence")]
    assert evidence.verify(out)["ok"] is True
    # a custodian without this program can check it too
    assert subprocess.run(["sha256sum", "-c", "manifest.sha256"], cwd=out, capture_output=True).returncode == 0
    event = [e for _, e in read_events(settings, codec) if e.chain == audit._chain and e.action == evidence.EXPORT]
    assert len(event) == 1 and event[0].actor == "records1" and event[0].rows == 3
    assert event[0].details["manifest_sha256"] == summary["manifest_sha256"]


def test_a_flipped_byte_is_named(package) -> None:
    _, out, _ = package
    image = sorted((out / "images").iterdir())[1]
    data = bytearray(image.read_bytes())
    data[10] ^= 0x01
    image.write_bytes(bytes(data))
    with pytest.raises(evidence.EvidenceInvalid, match=f"{image}: SHA-256 does not match"):
        evidence.verify(out)
    result = CliRunner().invoke(cli, ["evidence", "verify", str(out)])
    assert result.exit_code == evidence.EvidenceInvalid.exit_code and str(image) in result.stderr


def test_altered_manifest_and_added_file_are_named(package) -> None:
    _, out, _ = package
    (out / "notes.txt").write_text("added later")
    with pytest.raises(evidence.EvidenceInvalid, match="notes.txt: not in the manifest"):
        evidence.verify(out)
    (out / "notes.txt").unlink()
    manifest = out / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"rows": 3', '"rows": 2'))
    with pytest.raises(evidence.EvidenceInvalid, match="manifest.json: SHA-256 does not match"):
        evidence.verify(out)


def test_export_refuses_without_a_hold_or_into_a_used_folder(package, settings, codec, store, tmp_path) -> None:
    _, out, audit = package
    with pytest.raises(AlprError, match="never overwritten"):
        evidence.export(store, settings, codec, audit, case="anything", out=out, user="records1")
    with pytest.raises(AlprError, match="no active hold for case NOPE"):
        evidence.export(store, settings, codec, audit, case="NOPE", out=tmp_path / "empty", user="records1")


def test_export_and_verify_through_the_cli(settings, monkeypatch, tmp_path, unique) -> None:
    """The commands open the store themselves (no fixture holds it here)."""
    from alpr.core.settings import settings as cached

    monkeypatch.setenv("ALPR_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setenv("ALPR_DATA_DIR", str(settings.data_dir))
    cached.cache_clear()
    from tests.people import PASSWORD, publish_user

    publish_user(settings, Codec(), "sgt1")
    publish_user(settings, Codec(), "lt-rec1", role="SUPERVISOR")
    pw = f"{PASSWORD}\n"
    try:
        runner = CliRunner()
        assert runner.invoke(cli, ["migrate"]).exit_code == 0
        case = f"CASE-{unique}"
        placed = runner.invoke(cli, ["holds", "add", "--case", case, "--reason", "r", "--user", "sgt1",
                                     "--password-stdin", "--read-id", "r-not-yet-stored"], input=pw)
        assert placed.exit_code == 0, placed.output
        out = tmp_path / "pkg"
        export = ["evidence", "export", "--case", case, "--out", str(out), "--password-stdin", "--user"]
        refused = runner.invoke(cli, [*export, "sgt1"], input=pw)
        assert refused.exit_code != 0 and "needs supervisor" in refused.output and not out.exists()
        exported = runner.invoke(cli, [*export, "lt-rec1"], input=pw)
        assert exported.exit_code == 0, exported.output
        assert json.loads(exported.stdout)["rows"] == 0
        verified = runner.invoke(cli, ["evidence", "verify", str(out)])
        assert verified.exit_code == 0 and json.loads(verified.stdout)["ok"] is True
    finally:
        cached.cache_clear()
