"""Releases: never exported without a supervisor's approval, never by the requester's own approval,
never outside the approved plates x time range; every step on the audit topic."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from alpr.audit.trail import AuditLog, read_events
from alpr.warehouse import evidence
from alpr.core.errors import Refused
from alpr.access.releases import export, load_requests, review, submit
from alpr.access.users import Authenticator, UserDirectory
from alpr.schemas.models import AgencyType, ReleaseStatus
from tests.people import PASSWORD, publish_user

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


@pytest.fixture
def people(settings, codec, unique):
    names = {"analyst": f"an-{unique}", "sup_a": f"supa-{unique}", "sup_b": f"supb-{unique}"}
    publish_user(settings, codec, names["analyst"])
    publish_user(settings, codec, names["sup_a"], role="SUPERVISOR")
    publish_user(settings, codec, names["sup_b"], role="SUPERVISOR")
    directory = UserDirectory(settings, codec).load()
    audit = AuditLog(settings, codec, "release-test")
    auth = Authenticator(settings, directory, audit, "release-test")
    users = {k: auth.authenticate(v, PASSWORD, via="test") for k, v in names.items()}
    return users, audit


@pytest.fixture
def reads(store):
    def row(rid, plate, day):
        return (f"('{rid}', 'cam-1', 'SPD', '{plate}', 0.9, 'JPEG-{rid}', "
                f"'{(T0 + timedelta(days=day)):%Y-%m-%d %H:%M:%S}', '{(T0 + timedelta(days=day)):%Y-%m-%d %H:%M:%S}', "
                "38.5, -121.4, 'm', 1)")
    rows = [row("in1", "7ABC123", 2), row("in2", "7ABC123", 5), row("late", "7ABC123", 20),
            row("early", "7ABC123", -3), row("other", "8XYZ999", 3)]
    store.command("INSERT INTO alpr.reads (read_id, camera_id, agency, plate, confidence, crop_jpeg, captured_at, "
                  "read_at, lat, lon, model_version, frames_seen) VALUES " + ",".join(rows))
    return store


def _request(settings, codec, audit, user, agency_type=AgencyType.LAW_ENFORCEMENT):
    return submit(settings, codec, audit, user, requesting_agency="SDPD", agency_type=agency_type,
                  requester="Det. Smith", purpose="robbery investigation", case_number="24-003", plates=["7abc-123"],
                  scope_from=T0, scope_to=T0 + timedelta(days=10), document_ref="DOC-2026-77")


def test_export_only_after_approval_by_another_supervisor_and_within_scope(settings, codec, people, reads,
                                                                            tmp_path) -> None:
    users, audit = people
    since = datetime.now(timezone.utc)
    req = _request(settings, codec, audit, users["sup_a"])
    assert req.status == ReleaseStatus.PENDING and req.plates == ["7ABC123"]
    with pytest.raises(Refused, match="only a request approved"):
        export(settings, codec, audit, users["analyst"], reads, req.request_id, tmp_path)
    with pytest.raises(Refused, match="submitter of a request may not review"):
        review(settings, codec, audit, users["sup_a"], req.request_id, True, "looks fine to me")
    with pytest.raises(Refused, match="only a supervisor"):
        review(settings, codec, audit, users["analyst"], req.request_id, True, "looks fine to me")
    with pytest.raises(Refused, match="needs a reason"):
        review(settings, codec, audit, users["sup_b"], req.request_id, True, "")
    approved = review(settings, codec, audit, users["sup_b"], req.request_id, True, "written request verified")
    assert approved.status == ReleaseStatus.APPROVED and approved.reviewed_by == users["sup_b"].name

    result = export(settings, codec, audit, users["analyst"], reads, req.request_id, tmp_path)
    lines = [json.loads(x) for x in (result.folder / "data" / "reads.jsonl").read_text().splitlines()]
    assert [r["read_id"] for r in lines] == ["in1", "in2"]  # not 'late', 'early' or the other plate
    tagmanifest = (result.folder / "tagmanifest-sha256.txt").read_bytes()
    assert hashlib.sha256(tagmanifest).hexdigest() == result.manifest_sha256
    checked = evidence.verify(result.folder)  # one format, one verifier, for evidence and releases
    assert (checked["package"], checked["request"], checked["rows"]) == ("release", req.request_id, 2)
    (result.folder / "data" / "reads.jsonl").write_text("{}\n")
    with pytest.raises(evidence.EvidenceInvalid, match="reads.jsonl: SHA-256 does not match"):
        evidence.verify(result.folder)
    assert load_requests(settings, codec)[req.request_id].status == ReleaseStatus.EXPORTED
    with pytest.raises(Refused, match="EXPORTED"):  # once only
        export(settings, codec, audit, users["analyst"], reads, req.request_id, tmp_path / "again")

    events = [ev for _, ev in read_events(settings, codec) if ev.occurred_at >= since and ev.subject == req.request_id]
    got = [(e.action, e.outcome.value) for e in events]
    assert got == [("RELEASE_REQUEST", "ALLOWED"), ("RELEASE_EXPORT", "REFUSED"), ("RELEASE_APPROVE", "REFUSED"),
                   ("RELEASE_APPROVE", "REFUSED"), ("RELEASE_APPROVE", "REFUSED"), ("RELEASE_APPROVE", "ALLOWED"),
                   ("RELEASE_EXPORT", "ALLOWED"), ("RELEASE_EXPORT", "DONE"), ("RELEASE_EXPORT", "REFUSED")]
    assert [e.rows for e in events if e.action == "RELEASE_EXPORT" and e.outcome.value == "DONE"] == [2]


def test_other_agencies_are_routed_to_records_and_never_exported(settings, codec, people, reads, tmp_path) -> None:
    users, audit = people
    req = _request(settings, codec, audit, users["analyst"], AgencyType.OTHER)
    assert req.status == ReleaseStatus.ROUTED_TO_RECORDS
    with pytest.raises(Refused, match="not PENDING"):
        review(settings, codec, audit, users["sup_b"], req.request_id, True, "approve anyway")
    with pytest.raises(Refused, match="records-release process"):
        export(settings, codec, audit, users["sup_b"], reads, req.request_id, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_denied_request_cannot_be_exported(settings, codec, people, reads, tmp_path) -> None:
    users, audit = people
    req = _request(settings, codec, audit, users["analyst"])
    review(settings, codec, audit, users["sup_a"], req.request_id, False, "no written request attached")
    with pytest.raises(Refused, match="DENIED"):
        export(settings, codec, audit, users["analyst"], reads, req.request_id, tmp_path)


def test_cli_review_needs_the_supervisors_password(settings, codec, people, monkeypatch) -> None:
    from alpr.cli import cli
    from alpr.core.settings import settings as cached

    users, audit = people
    req = _request(settings, codec, audit, users["analyst"])
    monkeypatch.setenv("ALPR_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setenv("ALPR_DATA_DIR", str(settings.data_dir))
    cached.cache_clear()
    try:
        args = ["release", "review", req.request_id, "--user", users["sup_b"].name, "--approve", "--reason",
                "written request verified", "--password-stdin"]
        r = CliRunner().invoke(cli, args, input="not the password\n")
        assert r.exit_code != 0 and "password is wrong" in r.output
        assert load_requests(settings, codec)[req.request_id].status == ReleaseStatus.PENDING
        r = CliRunner().invoke(cli, args, input=f"{PASSWORD}\n")
        assert r.exit_code == 0, r.output
        assert json.loads(r.output.splitlines()[-1])["status"] == "APPROVED"
    finally:
        cached.cache_clear()
