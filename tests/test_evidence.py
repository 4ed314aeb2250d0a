"""Evidence packages: held reads and their images in a BagIt bag whose manifests catch any change."""

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
    assert (summary["rows"], summary["images"]) == (3, 2) and "warning" not in summary
    rows = [json.loads(line) for line in (out / "data" / "reads.jsonl").read_text().splitlines()]
    assert sorted(r["read_id"] for r in rows) == [f"{unique}-{i}" for i in range(3)]
    with_image = [r for r in rows if r["image"]]
    assert len(with_image) == 2 and all((out / r["image"]).read_bytes()[:2] == b"\xff\xd8" for r in with_image)
    assert all(r["captured_at"].endswith("Z") for r in rows)
    case = json.loads((out / "data" / "case.json").read_text())
    assert (case["case_number"], case["exported_by"], case["rows"]) == (f"CASE-{unique}", "records1", 3)
    assert [(h["placed_by"], h["reason"]) for h in case["holds"]] == [("sgt1", "evidence")]
    checked = evidence.verify(out)
    assert (checked["ok"], checked["package"], checked["rows"]) == (True, "evidence", 3)
    assert checked["tagmanifest_sha256"] == summary["tagmanifest_sha256"]
    # a custodian without this program can check it too (BagIt manifests are sha256sum-compatible)
    for manifest in ("manifest-sha256.txt", "tagmanifest-sha256.txt"):
        assert subprocess.run(["sha256sum", "-c", manifest], cwd=out, capture_output=True).returncode == 0
    assert not list(out.parent.glob(".*partial"))  # the staging folder was renamed into place
    event = [e for _, e in read_events(settings, codec) if e.chain == audit._chain and e.action == evidence.EXPORT]
    assert len(event) == 1 and event[0].actor == "records1" and event[0].rows == 3
    assert event[0].details["tagmanifest_sha256"] == summary["tagmanifest_sha256"]
    assert event[0].details["empty"] == "false"


def test_export_of_purged_reads_warns_and_is_audited_as_empty(settings, codec, store, unique, tmp_path) -> None:
    audit = AuditLog(settings, codec, "test-evidence-empty")
    case = f"CASE-{unique}"
    holds.place(settings, audit, kafka.Publisher(settings, codec, "t"), case=case, reason="evidence", user="sgt1",
                read_ids=[f"{unique}-gone-1", f"{unique}-gone-2"])
    summary = evidence.export(store, settings, codec, audit, case=case, out=tmp_path / "pkg", user="records1")
    assert summary["rows"] == 0 and "holds no reads" in summary["warning"]
    assert summary["held_read_ids_not_in_store"] == 2
    assert evidence.verify(tmp_path / "pkg")["rows"] == 0
    (event,) = [e for _, e in read_events(settings, codec) if e.chain == audit._chain and e.action == evidence.EXPORT]
    assert (event.rows, event.details["empty"], event.details["held_read_ids_not_in_store"]) == (0, "true", "2")


def test_a_flipped_byte_is_named(package) -> None:
    _, out, _ = package
    image = sorted((out / "data" / "images").iterdir())[1]
    data = bytearray(image.read_bytes())
    data[10] ^= 0x01
    image.write_bytes(bytes(data))
    with pytest.raises(evidence.EvidenceInvalid, match=f"{image}: SHA-256 does not match"):
        evidence.verify(out)
    result = CliRunner().invoke(cli, ["evidence", "verify", str(out)])
    assert result.exit_code == evidence.EvidenceInvalid.exit_code and str(image) in result.stderr


def test_altered_manifest_and_added_file_are_named(package) -> None:
    _, out, _ = package
    for added in (out / "notes.txt", out / "data" / "notes.txt"):
        added.write_text("added later")
        with pytest.raises(evidence.EvidenceInvalid, match="notes.txt: not in the manifest"):
            evidence.verify(out)
        added.unlink()
    info = out / "bag-info.txt"
    info.write_text(info.read_text().replace("ALPR-Rows: 3", "ALPR-Rows: 2"))
    with pytest.raises(evidence.EvidenceInvalid, match="bag-info.txt: SHA-256 does not match"):
        evidence.verify(out)
    (out / "data" / "reads.jsonl").unlink()
    with pytest.raises(evidence.EvidenceInvalid):
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
        assert "warning: the package holds no reads" in exported.stderr
        verified = runner.invoke(cli, ["evidence", "verify", str(out)])
        assert verified.exit_code == 0 and json.loads(verified.stdout)["ok"] is True
    finally:
        cached.cache_clear()
