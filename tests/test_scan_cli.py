"""``fr-mer scan`` through click's CliRunner: exit codes, table, summary, shared options."""
from __future__ import annotations

import csv
import io
import subprocess
import sys

import click
import openpyxl
import pytest
from click.testing import CliRunner

from fr_mer.cli import COMMANDS, main
from fr_mer.commands.dataset_options import DATASET_OPTION_NAMES, clips_from_options, dataset_options
from fr_mer.pipeline.clips import SCAN_COLUMNS
from fr_mer.pipeline.layouts import CASME2_HEADER, write_casme2
from fr_mer.pipeline.scan import read_scan_table, scan, summarize
from tests.conftest import CASME2_CLIPS, SAMM_CLIPS, SMIC_CLIPS


def run(*args):
    return CliRunner().invoke(main, ["scan", *map(str, args)])


def test_casme2_table_and_summary(casme2_release, tmp_path):
    table = tmp_path / "out" / "scan.csv"
    result = run("--dataset", "casme2", "--root", casme2_release.root, "--out", table)
    assert result.exit_code == 0, result.output
    with open(table, newline="", encoding="utf-8") as handle:
        assert tuple(next(csv.reader(handle))) == SCAN_COLUMNS
    rows = read_scan_table(table)
    assert len(rows) == len(CASME2_CLIPS)
    first = rows[0]
    assert (first["dataset"], first["subject"], first["clip"], first["label"]) == (
        "casme2", "sub01", "EP02_01f", "negative")
    frames = (first["onset_frame"], first["apex_frame"], first["offset_frame"])
    assert frames == ("98", "100", "103")
    assert first["onset_path"].endswith("img98.jpg") and first["status"] == "ok"
    assert [r["status"] for r in rows].count("repaired") == 2
    assert {r["label"] for r in rows} == {"negative", "positive", "surprise", ""}

    out = result.stdout
    assert "7 clips: 5 ok, 2 repaired, 0 unusable" in out
    counts = next(line for line in out.splitlines() if line.startswith("casme2 "))
    # negative positive surprise (no class) ok repaired unusable total
    assert counts.split()[1:] == ["3", "1", "1", "2", "5", "2", "0", "7"]
    assert "ApexFrame cell '/'" in out and "equals onset" in out
    assert "CASME2-coding-20140508.xlsx row 3" in out
    assert "sub09/EP02_02f, sub24/EP02_07" in out
    assert str(table) in out


def test_table_to_stdout_summary_to_stderr(samm_release):
    result = run("--dataset", "samm", "--root", samm_release.root)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["clip"] for r in rows] == [c.clip for c in SAMM_CLIPS]
    assert "fr-mer scan (samm)" in result.stderr and "fr-mer scan" not in result.stdout
    assert "apex 1143 outside" in result.stderr


def test_smic_spot(smic_release, tmp_path):
    table = tmp_path / "smic.csv"
    result = run("--dataset", "smic", "--root", smic_release.root, "--smic-apex", "spot",
                 "--out", table)
    assert result.exit_code == 0, result.output
    rows = read_scan_table(table)
    assert len(rows) == len(SMIC_CLIPS)
    assert all(r["apex_frame"] == "" and r["apex_rule"] == "spot" for r in rows)
    assert [r["clip"] for r in rows][0] == "s01_ne_01" and rows[0]["subject"] == "s01"


def test_composite_with_one_root_per_database(composite_release, tmp_path):
    _, listed, releases = composite_release
    table = tmp_path / "composite-scan.csv"
    result = run(
        "--dataset", "composite", "--composite-list", listed, "--out", table,
        "--casme2-root", releases["casme2"].root,
        "--casme2-annotations", releases["casme2"].annotations,
        "--samm-root", releases["samm"].root, "--smic-root", releases["smic"].root,
    )
    assert result.exit_code == 0, result.output
    rows = read_scan_table(table)
    assert len(rows) == 15
    assert [r["status"] for r in rows].count("unusable") == 3
    counts = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()
              if line.split() and line.split()[0] in ("casme2", "samm", "smic", "all")}
    assert counts["all"][-1] == "15" and counts["samm"][-1] == "5"
    assert "a custom list" in result.stdout


def test_composite_with_a_shared_root(composite_release, tmp_path):
    folder, listed, _ = composite_release
    table = tmp_path / "composite-scan.csv"
    result = run("--dataset", "composite", "--root", folder, "--composite-list", listed,
                 "--out", table)
    assert result.exit_code == 0, result.output
    assert [r["status"] for r in read_scan_table(table)].count("unusable") == 3


def test_composite_official_list_by_default(casme2_release, tmp_path):
    table = tmp_path / "c.csv"
    result = run("--dataset", "composite", "--casme2-root", casme2_release.root, "--out", table)
    assert result.exit_code == 0, result.output
    rows = read_scan_table(table)
    assert len(rows) == 442
    assert "the official MEGC2019 list" in result.stdout
    smic = [r for r in rows if r["dataset"] == "smic"]
    assert len(smic) == 164 and all("--smic-root" in r["problem"] for r in smic)
    assert "more (see the problem column of" in result.stdout


def test_unusable_rows_still_exit_zero(tmp_path):
    root = tmp_path / "c"
    unsafe = {"Subject": "01", "Filename": "../x", "OnsetFrame": 1, "ApexFrame": 2,
              "OffsetFrame": 3}
    write_casme2(root, CASME2_CLIPS[:2], extra_rows=[unsafe])
    result = run("--dataset", "casme2", "--root", root, "--out", tmp_path / "t.csv")
    assert result.exit_code == 0
    assert "1 unusable" in result.stdout and "not a plain folder name" in result.stdout


@pytest.mark.parametrize("case", ["missing-root", "no-release", "wrong-header", "bad-list"])
def test_unusable_inputs_exit_nonzero_naming_the_file(case, tmp_path, casme2_release):
    if case == "missing-root":
        args, named = ["--dataset", "samm", "--root", tmp_path / "nowhere"], tmp_path / "nowhere"
    elif case == "no-release":
        args, named = ["--dataset", "smic", "--root", casme2_release.root], casme2_release.root
    elif case == "wrong-header":
        sheet = tmp_path / "CASME2-coding-20140508.xlsx"
        book = openpyxl.Workbook()
        book.active.append([h for h in CASME2_HEADER if h != "ApexFrame"])
        book.save(sheet)
        args = ["--dataset", "casme2", "--root", casme2_release.root, "--annotations", sheet]
        named = sheet
    else:
        bad = tmp_path / "list.csv"
        bad.write_text("casme2,sub01,EP02_01f,7\r\n")
        args, named = ["--dataset", "composite", "--casme2-root", casme2_release.root,
                       "--composite-list", bad], bad
    result = run(*args, "--out", tmp_path / "t.csv")
    assert result.exit_code == 1, result.output
    assert str(named) in result.stderr and "Error:" in result.stderr
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.parametrize("args", [
    ["--dataset", "casme2"],
    ["--dataset", "casme2", "--root", ".", "--samm-root", "."],
    ["--dataset", "smic", "--root", ".", "--annotations", "x.xlsx"],
    ["--dataset", "composite", "--annotations", "x.xlsx", "--casme2-root", "."],
    ["--dataset", "composite"],
    ["--dataset", "composite", "--smic-root", ".", "--samm-annotations", "x.xlsx"],
    ["--dataset", "casme2", "--root", ".", "--smic-apex", "largest"],
])
def test_option_combinations_that_are_usage_errors(args):
    result = run(*args)
    assert result.exit_code == 2, result.output


def test_every_option_of_every_command_has_help():
    for name in COMMANDS:
        for param in main.get_command(None, name).params:
            if isinstance(param, click.Option):
                assert param.help, f"fr-mer {name} {param.opts[0]}"


def test_dataset_options_reused_by_another_command(casme2_release):
    seen = {}

    @click.command()
    @dataset_options
    @click.option("--jobs", type=int, default=1, help="Workers.")
    def other(**kwargs):
        assert set(DATASET_OPTION_NAMES) <= set(kwargs)
        seen["clips"] = clips_from_options(**kwargs)  # its own options are ignored

    result = CliRunner().invoke(other, ["--dataset", "casme2", "--root", str(casme2_release.root),
                                        "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert [c.clip for c in seen["clips"]] == [c.clip for c in CASME2_CLIPS]

    missing = str(casme2_release.root / "none")
    result = CliRunner().invoke(other, ["--dataset", "casme2", "--root", missing])
    assert result.exit_code == 1 and "folder not found" in result.output


def test_library_scan_and_summary(casme2_release):
    result = scan("casme2", root=casme2_release.root)
    summary = summarize(result.clips)
    assert summary["by_status"] == {"ok": 5, "repaired": 2, "unusable": 0}
    assert summary["by_label"] == {"negative": 3, "positive": 1, "surprise": 1, "(no class)": 2}
    assert result.inputs["casme2"]["annotations"] == str(casme2_release.annotations.resolve())
    assert result.unannotated == {"casme2": ["sub09/EP02_02f", "sub24/EP02_07"]}


def test_pipeline_commands_do_not_import_torch(casme2_release, tmp_path):
    # A fresh interpreter: this test session has imported torch already.
    code = (
        "import sys\n"
        "from fr_mer.cli import main\n"
        "try:\n"
        f"    main(['scan', '--dataset', 'casme2', '--root', {str(casme2_release.root)!r},"
        f" '--out', {str(tmp_path / 'scan.csv')!r}])\n"
        "except SystemExit as stop:\n"
        "    assert stop.code in (0, None), stop.code\n"
        "for name in ('preprocess', 'synth', 'import-ststnet'):\n"
        "    main.get_command(None, name)\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False", result.stdout + result.stderr
    assert (tmp_path / "scan.csv").is_file()


def test_every_command_is_listed_and_loads():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output
        assert main.get_command(None, name).name == name
