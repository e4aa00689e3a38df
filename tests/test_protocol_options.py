"""`train`, `evaluate` and `probe` take the protocol options from one declaration and accept and refuse the same
things (fr_mer.commands.common.protocol_options): `--protocol loso` without `--database` takes a one-database
cache's database and refuses a cache of several with the list; `--database` is for loso alone."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fr_mer.cli import main
from fr_mer.pipeline.cache import read_cache
from fr_mer.pipeline.labels import CLASSES
from fr_mer.train_checkpoint import excluded_rows
from tests.cachefactory import small_composite, write_flow_cache

COMMANDS = ("train", "evaluate", "probe")


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    folder = tmp_path_factory.mktemp("caches")
    rows = [("casme2", f"sub{s + 1:02d}", f"EP{s:02d}_{label[:2]}_{k}", label)
            for s in range(3) for label in CLASSES for k in range(2)]
    one = write_flow_cache(folder / "casme2.h5", rows)
    several, _ = small_composite(folder, subjects_per_db=2, clips_per_class=1)
    return {"one": one, "several": several}


def invoke(command: str, cache, out, *extra: str):
    args = [command, "--cache", str(cache), "--out", str(out), *extra]
    if command != "probe":
        args += ["--model", "ststnet", "--epochs", "1", "--batch-size", "16", "--threads", "1"]
    if command == "evaluate":
        args += ["--seeds", "1"]
    return CliRunner().invoke(main, args)


def _out(tmp_path, command):
    return tmp_path / (f"{command}.pt" if command == "train" else command)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("cache, extra, database, folds, samples", [
    ("one", (), "casme2", 3, 18),  # without --database: the cache's one database
    ("several", ("--database", "samm"), "samm", 2, 6),  # with it: that one, among several
])
def test_loso_runs_on_the_database_given_or_the_caches_one(caches, tmp_path, command, cache, extra, database,
                                                           folds, samples):
    result = invoke(command, caches[cache], _out(tmp_path, command), "--protocol", "loso", *extra)
    assert result.exit_code == 0, result.output
    if command == "train":
        assert f"training ststnet on {samples} samples" in result.output
    else:
        metrics = json.loads((_out(tmp_path, command) / "metrics.json").read_text())
        assert (metrics["database"], metrics["n_folds"], metrics["n_samples"]) == (database, folds, samples)


@pytest.mark.parametrize("command", COMMANDS)
def test_loso_without_database_on_a_cache_of_several_is_a_usage_error_listing_them(caches, tmp_path, command):
    result = invoke(command, caches["several"], _out(tmp_path, command), "--protocol", "loso")
    assert result.exit_code == 2, result.output
    assert "casme2, samm, smic; choose one with --database" in result.output
    assert not _out(tmp_path, command).exists()


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("extra, message", [
    (("--protocol", "composite", "--database", "casme2"), "--database is for --protocol loso"),
    (("--protocol", "loso", "--database", "casme3"), "casme3"),
    (("--protocol", "loso", "--database", "kinect"), "--database"),
    (("--protocol", "loso", "--classes", "7"), "not a class protocol of --database casme2"),
    (("--protocol", "composite", "--classes", "5"), "--protocol composite has the composite's 3 classes"),
    (("--protocol", "megc2018-cde", "--classes", "4"), "--classes"),
])
def test_the_same_protocol_options_are_refused_alike(caches, tmp_path, command, extra, message):
    result = invoke(command, caches["one"], _out(tmp_path, command), *extra)
    assert result.exit_code in (1, 2) and message in result.output, result.output
    assert "Traceback" not in result.output
    assert not _out(tmp_path, command).exists()


def test_the_refusals_have_the_same_exit_status_in_every_command(caches, tmp_path):
    for extra in (("--protocol", "composite", "--database", "casme2"), ("--protocol", "loso", "--classes", "7"),
                  ("--protocol", "loso",)):
        cache = caches["several"] if extra == ("--protocol", "loso") else caches["one"]
        statuses = {command: invoke(command, cache, _out(tmp_path, command), *extra).exit_code
                    for command in COMMANDS}
        assert len(set(statuses.values())) == 1 and 0 not in statuses.values(), (extra, statuses)


def test_excluded_rows_names_the_option_when_the_subject_is_absent(caches):
    import numpy as np

    from fr_mer.errors import ParameterError

    meta = read_cache(caches["several"]).meta
    databases, subjects = np.asarray(meta["database"]), np.asarray(meta["subject"])
    assert excluded_rows(databases, subjects, "casme2/sub01").sum() == 3
    assert excluded_rows(databases, subjects, None).sum() == 0
    with pytest.raises(ParameterError, match="--exclude-subject: no sample of subject 'casme2/sub09'"):
        excluded_rows(databases, subjects, "casme2/sub09")
