import os

from retrain.native_logs import native_logs_silenced


def test_native_log_lines_are_dropped_inside_and_kept_outside(capfd, monkeypatch):
    monkeypatch.delenv("RETRAIN_NATIVE_LOGS", raising=False)
    os.write(2, b"before\n")
    with native_logs_silenced():
        os.write(2, b"I0000 cudart_stub.cc: Could not find cuda drivers\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "before\nafter\n"


def test_retrain_native_logs_shows_them(capfd, monkeypatch):
    monkeypatch.setenv("RETRAIN_NATIVE_LOGS", "1")
    with native_logs_silenced():
        os.write(2, b"E0000 failed call to cuInit\n")
    assert "cuInit" in capfd.readouterr().err
