"""The command line as a user drives it: CliRunner in-process, and real subprocesses of both
``python -m imagerec`` and the installed ``imagerec`` script.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import shutil
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from ann_support import SAMPLE_DIR
from imagerec.cli import cli
from imagerec.embed.files import ModelSpec, write_random_model

SCRIPT = Path(sys.executable).with_name("imagerec")  # the console script installed beside the venv's python
ENTRY_POINTS = {"python -m imagerec": [sys.executable, "-m", "imagerec"], "imagerec": [str(SCRIPT)]}


def write_yaml(path: Path, raw: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def base_config(root: Path, out: Path, **index) -> dict:
    return {"data": {"image_root": str(root)}, "output": {"dir": str(out)},
            "runtime": {"device": "cpu", "threads": 1}, "index": {"workers": 2, "batch_size": 16, **index}, "model": {"arch": "resnet18", "init": "random"}}


def invoke(*args: str):
    """CliRunner with stdout and stderr kept apart (Click 8.2+: result.stdout / result.stderr)."""
    return CliRunner().invoke(cli, list(args), obj={}, prog_name="imagerec")


def run(entry: list[str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*entry, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def small_collection(tmp_path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    for i in range(20):
        Image.new("RGB", (32, 24), (i * 12, 80, 160)).save(root / f"{i:02d}.png")
    return root


# -- errors: a table ------------------------------------------------------------------------------


@pytest.fixture
def error_cases(tmp_path, small_collection) -> list[tuple[str, list[str], int, list[str], bool]]:
    """(name, arguments, exit code, texts the output must contain, one-line error expected)."""
    out = tmp_path / "out"
    unknown = write_yaml(tmp_path / "unknown_key.yaml", {**base_config(small_collection, out), "index": {"workerz": 2}})
    bad_value = write_yaml(tmp_path / "bad_value.yaml", base_config(small_collection, out, workers=0))
    no_root = write_yaml(tmp_path / "no_root.yaml", base_config(tmp_path / "nowhere", out))
    bad_yaml = tmp_path / "bad_yaml.yaml"
    bad_yaml.write_text("data: [unclosed\n")
    good = write_yaml(tmp_path / "good.yaml", base_config(small_collection, out))
    missing = tmp_path / "missing.yaml"
    return [
        ("missing --config", ["index"], 2, ["--config"], False),
        ("missing config file", ["--config", str(missing), "index"], 2, [str(missing), "not found"], True),
        ("unknown key", ["--config", str(unknown), "index"], 2, [str(unknown), "index.workerz", "unknown key"], True),
        ("bad value", ["--config", str(bad_value), "index"], 2, [str(bad_value), "index.workers", "greater than or equal to 1"], True),
        ("invalid yaml", ["--config", str(bad_yaml), "status"], 2, [str(bad_yaml), "YAML"], True),
        ("image_root missing", ["--config", str(no_root), "index"], 1, [str(tmp_path / "nowhere"), "not a folder"], True),
        ("--workers 0", ["--config", str(good), "index", "--workers", "0"], 2, ["--workers", "0"], False),
        ("unknown command", ["--config", str(good), "frobnicate"], 2, ["No such command", "frobnicate"], False),
        ("--config after the command", ["index", "--config", str(good)], 2, ["No such option", "--config"], False),
        ("status before index", ["--config", str(good), "status"], 1, ["no database yet", "run 'index'"], True),
    ]


def _check_error(name, code, texts, one_line, exit_code, stdout, stderr):
    assert exit_code == code, f"{name}: exit {exit_code}, stdout={stdout!r} stderr={stderr!r}"
    assert "Traceback" not in stdout + stderr, name
    for text in texts:
        assert text in stderr, f"{name}: {text!r} not in {stderr!r}"
    if one_line:
        assert stderr.strip() and "\n" not in stderr.strip(), f"{name}: not one line: {stderr!r}"


def test_errors_in_process(error_cases):
    for name, args, code, texts, one_line in error_cases:
        result = invoke(*args)
        assert isinstance(result.exception, SystemExit), f"{name}: unexpected {result.exception!r}"
        _check_error(name, code, texts, one_line, result.exit_code, result.stdout, result.stderr)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_errors_in_subprocess(entry, error_cases, tmp_path):
    for name, args, code, texts, one_line in error_cases:
        done = run(ENTRY_POINTS[entry], *args)
        _check_error(f"{entry}: {name}", code, texts, one_line, done.returncode, done.stdout, done.stderr)
    assert not (tmp_path / "out").exists(), "a refused command must not create output"


def test_command_line_options_override_the_config(tmp_path, small_collection):
    config = write_yaml(tmp_path / "config.yaml", base_config(tmp_path / "nowhere", tmp_path / "out", workers=1))
    refused = invoke("--config", str(config), "index")
    assert refused.exit_code == 1 and "not a folder" in refused.stderr
    result = invoke("--config", str(config), "index", "--image-root", str(small_collection), "--workers", "2",
                    "--batch-size", "4", "--quiet")
    assert result.exit_code == 0, result.output
    assert "indexed 20 new" in result.stdout
    con = sqlite3.connect(f"file:{tmp_path / 'out' / 'images.db'}?mode=ro", uri=True)
    try:
        assert con.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 20
        # batch_size 4: one transaction per 4 images, each bumping data_version once
        assert int(con.execute("SELECT value FROM meta WHERE key = 'data_version'").fetchone()[0]) == 5
    finally:
        con.close()


# -- help -----------------------------------------------------------------------------------------


def test_every_command_has_useful_help():
    group = invoke("--help")
    assert group.exit_code == 0
    assert "--config" in group.stdout and cli.help.split("\n")[0].strip() in group.stdout
    assert {"index", "status"} <= set(cli.commands)
    for name, command in cli.commands.items():
        assert name in group.stdout
        assert command.help and command.help.strip(), f"{name} has no help text"
        result = invoke(name, "--help")
        assert result.exit_code == 0, name
        assert f"Usage: imagerec {name}" in result.stdout
        assert command.help.strip().split("\n")[0][:40] in " ".join(result.stdout.split())
        for param in command.params:
            if getattr(param, "help", None) is None and param.param_type_name == "option":
                pytest.fail(f"{name} {param.opts} has no help")


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_help_from_real_entry_points(entry):
    done = run(ENTRY_POINTS[entry], "--help")
    assert done.returncode == 0 and "Usage: imagerec" in done.stdout and "index" in done.stdout
    done = run(ENTRY_POINTS[entry], "index", "--help")
    assert done.returncode == 0 and "--workers" in done.stdout and "--quiet" in done.stdout


# -- index and status on the real sample ----------------------------------------------------------


@pytest.fixture(scope="module")
def indexed_sample(tmp_path_factory):
    """A copy of the 300-photo sample plus three broken files, indexed once with a random model."""
    base = tmp_path_factory.mktemp("cli_sample")
    root = base / "photos"
    shutil.copytree(SAMPLE_DIR, root)
    first_jpeg = sorted(root.rglob("*.jpg"))[0].read_bytes()
    (root / "broken").mkdir()
    (root / "broken" / "empty.png").write_bytes(b"")
    (root / "broken" / "garbage.jpg").write_bytes(b"definitely not a jpeg " * 50)
    (root / "broken" / "half.jpg").write_bytes(first_jpeg[: len(first_jpeg) // 2])
    (root / "notes.txt").write_text("not an image")
    out = base / "out"
    model_id = write_random_model(out / "embedding_model.pt", ModelSpec(image_size=32), seed=3)
    config = write_yaml(base / "config.yaml", base_config(root, out))
    done = run(ENTRY_POINTS["python -m imagerec"], "--config", str(config), "index")  # not a TTY: no bar
    assert done.returncode == 0, done.stderr
    return {"root": root, "config": config, "db": out / "images.db", "model_id": model_id, "index": done}


def test_index_summary_and_quiet_non_tty(indexed_sample):
    done = indexed_sample["index"]
    assert done.stderr == ""  # no progress bar when stderr is not a terminal
    assert "indexed 300 new" in done.stdout
    assert "skipped 3 this run" in done.stdout
    assert "1 non-image files" in done.stdout
    assert "images/s" in done.stdout


def test_status_json_matches_the_database(indexed_sample):
    result = invoke("--config", str(indexed_sample["config"]), "status", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    con = sqlite3.connect(f"file:{indexed_sample['db']}?mode=ro", uri=True)
    try:
        images = con.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        by_reason = dict(con.execute("SELECT reason, COUNT(*) FROM skipped GROUP BY reason").fetchall())
        with_embedding = con.execute("SELECT COUNT(*) FROM embeddings WHERE model_id = ?",
                                     (indexed_sample["model_id"],)).fetchone()[0]
    finally:
        con.close()
    jpgs = [p for p in indexed_sample["root"].rglob("*.jpg") if p.parent.name != "broken"]
    assert images == len(jpgs) == 300 and with_embedding == 300
    assert sum(by_reason.values()) == 3
    assert {"images", "skipped", "skipped_by_reason", "with_embedding", "model_id", "ann"} <= set(report)
    assert report["images"] == 300
    assert report["skipped"] == 3
    assert report["skipped_by_reason"] == by_reason
    assert report["with_embedding"] == 300
    assert report["model_id"] == indexed_sample["model_id"]
    assert report["ann"] is None

    text = invoke("--config", str(indexed_sample["config"]), "status")
    assert text.exit_code == 0
    assert "300" in text.stdout and indexed_sample["model_id"] in text.stdout and "absent" in text.stdout


def test_status_reports_ann_state(indexed_sample, tmp_path):
    """After build-ann the index is current; after the collection changes it is stale."""
    base = tmp_path / "copy"
    shutil.copytree(indexed_sample["root"].parent / "out", base / "out")
    raw = yaml.safe_load(indexed_sample["config"].read_text())
    raw["output"]["dir"] = str(base / "out")
    raw["data"]["image_root"] = str(base / "photos")
    shutil.copytree(indexed_sample["root"], base / "photos")
    config = write_yaml(base / "config.yaml", raw)
    built = invoke("--config", str(config), "build-ann")
    assert built.exit_code == 0, built.output
    report = json.loads(invoke("--config", str(config), "status", "--json").stdout)
    assert report["ann"]["state"] == "current" and report["ann"]["count"] == 300

    victim = sorted((base / "photos").rglob("*.jpg"))[5]
    victim.unlink()
    again = invoke("--config", str(config), "index", "--quiet")
    assert again.exit_code == 0 and "1 removed" in again.stdout
    report = json.loads(invoke("--config", str(config), "status", "--json").stdout)
    assert report["images"] == 299 and report["ann"]["state"] == "stale"


def test_newer_schema_is_refused(indexed_sample, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(indexed_sample["db"].parent, out)
    raw = yaml.safe_load(indexed_sample["config"].read_text())
    raw["output"]["dir"] = str(out)
    config = write_yaml(tmp_path / "config.yaml", raw)
    con = sqlite3.connect(out / "images.db")
    con.execute("PRAGMA user_version = 99")
    con.close()
    for args in (["index", "--quiet"], ["status"], ["status", "--json"]):
        result = invoke("--config", str(config), *args)
        assert result.exit_code != 0 and isinstance(result.exception, SystemExit), args
        message = result.stderr.strip()
        assert "newer" in message and "\n" not in message and "Traceback" not in result.output, message
    done = run(ENTRY_POINTS["imagerec"], "--config", str(config), "index")
    assert done.returncode != 0 and "newer" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# -- progress bar: only on a terminal, never with --quiet -----------------------------------------


def _index_with_tty_stderr(config: Path, *extra: str) -> tuple[int, str, str]:
    """Run index with stderr on a pseudo-terminal (as in an interactive shell); stdout is a pipe."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real terminal has a size
    proc = subprocess.Popen([sys.executable, "-m", "imagerec", "--config", str(config), "index", *extra],
                            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: every writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    stdout = proc.stdout.read().decode()
    code = proc.wait(timeout=120)
    reader.join(timeout=10)
    os.close(master)
    return code, stdout, b"".join(chunks).decode(errors="replace")


def test_progress_bar_only_on_a_terminal(tmp_path, small_collection):
    config = write_yaml(tmp_path / "config.yaml", base_config(small_collection, tmp_path / "out"))
    code, stdout, terminal = _index_with_tty_stderr(config)
    assert code == 0 and "indexed 20 new" in stdout
    assert "20/20" in terminal and "img" in terminal  # tqdm: count, total and unit

    (small_collection / "extra.png").write_bytes((small_collection / "00.png").read_bytes())
    code, stdout, terminal = _index_with_tty_stderr(config, "--quiet")
    assert code == 0 and "indexed 1 new" in stdout
    assert terminal.strip() == ""

    result = invoke("--config", str(config), "index")  # CliRunner's streams are not terminals
    assert result.exit_code == 0 and result.stderr == ""
    assert "21 unchanged" in result.stdout
