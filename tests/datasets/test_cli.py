"""``python -m studio dataset ...`` end to end on a real workspace."""
from __future__ import annotations

import argparse
import json

import pytest

from studio.cli import datasets as cli
from tests.datasets.helpers import write, write_json


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace")
    parser.add_argument("--db-url")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_import_list_show_delete(settings, tmp_path, capsys):
    src = write(tmp_path / "outside" / "qa.csv", "prompt,response\nHi?,Hello.\nBye?,Goodbye.\nHi?,Hello.\n")
    ws = str(settings.workspace)
    assert run("dataset", "import", str(src), "--workspace", ws) == cli.EXIT_REFUSED
    assert "outside the workspace" in capsys.readouterr().err
    code = run("dataset", "import", str(src), "--copy", "--map", "prompt=instruction", "--map", "response=output",
               "--dedupe", "--val-fraction", "0.5", "--name", "qa", "--workspace", ws)
    out = capsys.readouterr().out
    assert code == 0 and "imported dataset 1 'qa': 2 rows (1 train, 1 validation), format alpaca" in out
    assert "removed 1 duplicate rows" in out
    assert run("--workspace", ws, "dataset", "list", "--json") == 0  # --workspace before the subcommand
    listed = json.loads(capsys.readouterr().out)
    assert [(d["id"], d["name"], d["num_rows"]) for d in listed] == [(1, "qa", 2)]
    assert run("dataset", "show", "1", "--rows", "1") == 0  # FTS_WORKSPACE from the settings fixture
    assert '"role": "user"' in capsys.readouterr().out
    assert run("dataset", "delete", "1") == 0
    assert run("dataset", "show", "1") == cli.EXIT_NOT_FOUND


def test_import_refusal_prints_every_problem(settings, capsys):
    up = settings.workspace / "uploads"
    write_json(up / "bad.json", [{"instruction": "a", "output": ""}, {"instruction": "", "output": "b"},
                                 {"instruction": "ok", "output": "ok"}])
    assert run("dataset", "import", str(up / "bad.json")) == cli.EXIT_REFUSED
    err = capsys.readouterr().err
    assert "bad.json row 1, field `output`: turn 2 (assistant) is empty" in err and "bad.json row 2" in err
    assert run("dataset", "import", str(up / "bad.json"), "--skip-bad-rows") == 0
    assert "skipped 2 bad rows" in capsys.readouterr().out


def test_bad_map_argument():
    with pytest.raises(SystemExit):
        cli.parse_map(["no-equals-sign"])


def test_registered_in_the_studio_entry_point(settings, capsys):
    main = pytest.importorskip("studio.__main__").main
    assert main(["dataset", "list"]) == 0
    assert "name" in capsys.readouterr().out
