"""The ablation tables: every row is a valid config, rows that say they reuse a model train the same
settings, and the committed reference runs (results/) are the rows the code defines today."""
import json

import pytest

from clipdiff_mini.captioners.ablations import RESULTS_DIR, TABLE_BASE, TABLES, table_for_reader
from clipdiff_mini.captioners.checkpoints import SAMPLING_ONLY
from clipdiff_mini.config import get_config, project_root


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_row_is_a_valid_config_and_its_sampling_overrides_are_sampling_only(table):
    for row in TABLES[table]:
        cfg = get_config("ci", {**TABLE_BASE.get(table, {}), **row.train, **row.sample})  # raises on a bad key
        assert cfg is not None
        for key in row.sample:
            section, name = key.split(".", 1)
            assert name in SAMPLING_ONLY.get(section, ()), f"{table} row {row.name!r}: {key} retrains"


@pytest.mark.parametrize("table", sorted(TABLES))
def test_a_row_that_reuses_another_rows_model_trains_the_same_settings(table):
    by_name = {r.name: r for r in TABLES[table]}
    for row in TABLES[table]:
        if row.note.startswith("model of '"):
            other = row.note.split("'")[1]
            assert by_name[other].train == row.train, (table, row.name, other)


@pytest.mark.parametrize("path", sorted((project_root() / RESULTS_DIR).glob("*.json")), ids=lambda p: p.name)
def test_committed_results_are_rows_of_the_tables_as_defined_now(path):
    """A committed reference run must say what the code would rerun: its rows exist and carry the
    overrides the table defines today, and each says how it was run."""
    doc = json.loads(path.read_text())
    rows = {r.name: r for r in TABLES[doc["table"]]}
    for r in doc["rows"]:
        if r["section"] == "baseline":
            continue
        assert r["row"] in rows, f"{path.name}: row {r['row']!r} is not in the table any more"
        spec = rows[r["row"]]
        assert r["overrides"] == {**spec.train, **spec.sample}, f"{path.name}: row {r['row']!r} changed since its run"
        for key in ("commit", "date", "threads", "command"):
            assert r["run"][key], (path.name, r["row"], key)


def test_the_reader_sees_their_own_run_before_the_reference_run(tmp_path):
    committed = sorted((project_root() / RESULTS_DIR).glob("*.json"))
    if not committed:
        pytest.skip("no committed reference run")
    table = json.loads(committed[0].read_text())["table"]
    label, md, rows = table_for_reader(table, tmp_path)  # nothing of the reader's: the reference run
    assert "reference run" in label and rows
    own = tmp_path / "laptop" / "ablations"
    own.mkdir(parents=True)
    (own / f"{table}.json").write_text(json.dumps({"table": table, "rows": [{"row": "mine", "section": "x"}]}))
    (own / f"{table}.md").write_text("my table\n")
    label, md, rows = table_for_reader(table, tmp_path)
    assert "your laptop run" in label and md == "my table\n" and list(rows) == ["mine"]
    assert table_for_reader("no such table", tmp_path) is None


def test_lever_pairs_name_rows_of_the_lever_table():
    from clipdiff_mini.captioners.ablations import (CLIP_DIFFUSIONLM_PAIRS, CLIP_DIFFUSIONLM_ROWS, DDCAP_LEVER_ROWS,
                                                    DDCAP_PAIRS, DDCAP_ROWS, LEVER_PAIRS)

    for rows, pairs in ((DDCAP_LEVER_ROWS, LEVER_PAIRS), (CLIP_DIFFUSIONLM_ROWS, CLIP_DIFFUSIONLM_PAIRS),
                        (DDCAP_ROWS, DDCAP_PAIRS)):
        names = {r.name for r in rows}
        for a, b, _ in pairs:
            assert a in names and b in names, (a, b)


def test_row_differences_by_hand():
    from clipdiff_mini.captioners.ablations import row_differences

    rows = {"x": {"scene_accuracy": 0.25, "object_recall": 0.5, "repeated_object": 0.1},
            "y": {"scene_accuracy": 0.75, "object_recall": 0.625, "repeated_object": 0.02}}
    lines = row_differences(rows, [("x", "y", "a change"), ("x", "missing", "skipped")])
    assert lines == ["- a change: scene accuracy 0.250 -> 0.750 (+0.500), object recall 0.500 -> 0.625, "
                     "repeated object 10.0% -> 2.0%"]


def test_every_table_trains_a_registered_captioner():
    from clipdiff_mini.captioners.ablations import TABLE_CAPTIONER
    from clipdiff_mini.captioners.registry import CAPTIONERS

    assert set(TABLE_CAPTIONER) == set(TABLES)
    for table, name in TABLE_CAPTIONER.items():
        assert name in CAPTIONERS, table
        section = CAPTIONERS[name].section
        for row in TABLES[table]:  # a table's rows switch its captioner's section and the shared ones only
            assert {k.split(".")[0] for k in {**row.train, **row.sample}} <= {section, "captioner", "autoregressive"}, row

