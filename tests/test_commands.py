"""Commands a person runs that no other test walks through: reading images, the list commands."""

from __future__ import annotations

import json

import cv2

from alpr.recognition.footage import plate_image
from tests.people import PASSWORD, publish_user


def test_read_json_gives_one_object_per_image_and_errors_do_not_stop_the_rest(alpr, tmp_path) -> None:
    good = tmp_path / "car.jpg"
    scene = cv2.copyMakeBorder(plate_image("7ABC123", width=320), 200, 200, 300, 300, cv2.BORDER_CONSTANT,
                               value=(90, 90, 90))
    cv2.imwrite(str(good), scene)
    corrupt = tmp_path / "truncated.jpg"
    corrupt.write_bytes(good.read_bytes()[:200])
    missing = tmp_path / "gone.jpg"
    result = alpr(["read", str(corrupt), str(good), str(missing), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["image"] for r in rows] == [str(corrupt), str(good), str(missing)]
    assert rows[0]["plates"] == [] and rows[0]["error"]
    assert rows[2]["plates"] == [] and "No such file" in rows[2]["error"]
    assert "error" not in rows[1] and rows[1]["ms"] > 0
    for plate in rows[1]["plates"]:
        assert set(plate) >= {"text", "confidence", "box"} and 0 <= plate["confidence"] <= 1
    # every image unreadable: one error line and a failing exit code
    result = alpr(["read", str(corrupt)])
    assert result.exit_code != 0


def test_list_commands_show_what_was_entered_and_are_audited(alpr, settings, codec, unique, tmp_path) -> None:
    from alpr.audit.trail import read_events

    supervisor, analyst = f"sup-{unique}", f"an-{unique}"
    publish_user(settings, codec, supervisor, role="SUPERVISOR")
    publish_user(settings, codec, analyst, role="ANALYST")
    login = ["--user", analyst, "--password-stdin"]
    extract = tmp_path / "extract.csv"
    extract.write_text("plate,state,reason,source,case_number,expires\n"
                       f"7ABC{unique[:3].upper()},CA,STOLEN_VEHICLE,LOCAL,26-{unique[:4]},2027-06-30\n")
    assert alpr(["hotlist", "import", str(extract), "--source", "LOCAL", *login], f"{PASSWORD}\n").exit_code == 0
    listed = alpr(["hotlist", "list", "--source", "LOCAL", *login], f"{PASSWORD}\n")
    assert listed.exit_code == 0, listed.output
    assert any(json.loads(line)["plate"] == f"7ABC{unique[:3].upper()}"
               for line in listed.output.splitlines() if line.startswith("{"))
    added = alpr(["partial", "add", "7AB?12*", "--case", f"26-{unique}", "--incident", "HOMICIDE", *login],
                 f"{PASSWORD}\n")
    assert added.exit_code == 0, added.output
    listed = alpr(["partial", "list", *login], f"{PASSWORD}\n")
    mine = [json.loads(line) for line in listed.output.splitlines()
            if line.startswith("{") and json.loads(line)["case_number"] == f"26-{unique}"]
    assert len(mine) == 1 and mine[0]["active"] and mine[0]["pattern"] == "7AB?12*"
    holds = alpr(["holds", "list", *login], f"{PASSWORD}\n")
    assert holds.exit_code == 0, holds.output
    releases = alpr(["release", "list", "--user", supervisor, "--password-stdin"], f"{PASSWORD}\n")
    assert releases.exit_code == 0, releases.output
    refused = alpr(["release", "list", *login], f"{PASSWORD}\n")  # analysts do not see the release file
    assert refused.exit_code != 0
    actions = {(e.actor, e.action) for _, e in read_events(settings, codec) if e.actor in (analyst, supervisor)}
    assert {(analyst, "HOTLIST_IMPORT"), (analyst, "HOTLIST_LIST"), (analyst, "PARTIAL_ADD"),
            (analyst, "PARTIAL_LIST"), (analyst, "HOLD_LIST")} <= actions
