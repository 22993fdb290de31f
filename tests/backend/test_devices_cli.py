"""``tinydl devices``: the listing agrees with the registry and with TINYDL_BACKEND."""
import json

import hal
from tinydl.cli import main


def test_devices_json_matches_registry(capsys, monkeypatch):
    monkeypatch.setenv("TINYDL_BACKEND", "null")
    assert main(["devices", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["chosen"] == "null"
    assert out["decisions"] == [{"backend": "null", "why": "chosen: TINYDL_BACKEND"}]
    avail = hal.available_backends()
    assert {k: v["available"] for k, v in out["backends"].items()} == \
        {k: ok for k, (ok, _) in avail.items()}
    for name, info in out["backends"].items():
        if not info["available"]:
            assert info["reason"] == avail[name][1] and info["reason"]


def test_devices_text_names_the_choice(capsys, monkeypatch):
    monkeypatch.delenv("TINYDL_BACKEND", raising=False)
    assert main(["devices", "--backend", "numpy"]) == 0
    text = capsys.readouterr().out
    assert "would use: numpy" in text and "asked for explicitly" in text
