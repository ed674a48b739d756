"""The paper's reference tables: transcription checks and the lookup API."""
from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

import pytest

from clipfit.experiments import paper
from clipfit.experiments.paper import canonical_dataset, canonical_method, load_table, lookup, settings

PAPER = "Li et al., Vision-Language Model Fine-Tuning via Simple Parameter-Efficient Modification"
# The paper prints two decimals: an HM from rounded Base/New, or a mean of eleven rounded
# numbers, is off by at most about 0.01; 0.05 leaves room for one-decimal cells, no more.
TOL = 0.05

DASSL_AND_SHORT_NAMES = [
    ("ImageNet", "imagenet"),
    ("Caltech101", "caltech101"),
    ("OxfordPets", "oxford_pets"),
    ("StanfordCars", "stanford_cars"),
    ("OxfordFlowers", "oxford_flowers"),
    ("Food101", "food101"),
    ("FGVCAircraft", "fgvc_aircraft"),
    ("SUN397", "sun397"),
    ("DescribableTextures", "dtd"),
    ("EuroSAT", "eurosat"),
    ("UCF101", "ucf101"),
    ("ImageNetV2", "imagenetv2"),
    ("ImageNetSketch", "imagenet_sketch"),
    ("ImageNetA", "imagenet_a"),
    ("ImageNetR", "imagenet_r"),
]


def _mismatches(table: dict) -> dict[tuple, tuple[float, float]]:
    """Every failed check in a table: (check, method, dataset, shots, metric) -> (printed, computed)."""
    found: dict[tuple, tuple[float, float]] = {}
    if "hm" in table["metrics"]:
        for row in table["rows"]:
            base, new, hm = row["base"], row["new"], row["hm"]
            expected = 2 * base * new / (base + new)
            if abs(hm - expected) > TOL:
                found[("hm", row["method"], row["dataset"], row["shots"], "hm")] = (hm, expected)
    average = table["average"]
    if average is None:
        return found
    groups: dict[tuple[str, int], dict[str, dict]] = defaultdict(dict)
    for row in table["rows"]:
        groups[(row["method"], row["shots"])][row["dataset"]] = row
    for (method, shots), by_dataset in groups.items():
        for metric in average["metrics"]:
            printed = by_dataset[average["dataset"]][metric]
            values = [by_dataset[d][metric] for d in average["of"]]
            if printed is None or None in values:
                continue  # a gap in the paper text: test_gaps_are_exactly_the_lost_2shot_coop_cells
            mean = sum(values) / len(values)
            if abs(mean - printed) > TOL:
                found[("average", method, average["dataset"], shots, metric)] = (printed, mean)
    return found


def _listed(table: dict) -> dict[tuple, dict]:
    return {
        (e["check"], e["method"], e["dataset"], e["shots"], e["metric"]): e
        for e in table["known_inconsistencies"]
    }


def _row(table: dict, method: str, dataset: str, shots: int) -> dict:
    key = (method, dataset, shots)
    return next(r for r in table["rows"] if (r["method"], r["dataset"], r["shots"]) == key)


@pytest.fixture(params=paper.TABLES)
def table(request) -> dict:
    return load_table(request.param)


def test_every_json_file_is_a_listed_table_with_its_source():
    on_disk = {p.stem for p in Path(paper.__file__).parent.glob("*.json")}
    assert on_disk == set(paper.TABLES)
    for stem in paper.TABLES:
        source = load_table(stem)["source"]
        number = stem.removeprefix("table")
        assert source["paper"] == PAPER
        assert source["table"] == f"Table {number}"
        assert source["page"].startswith(f"Table {number}, ")
        assert source["section"].startswith(("Section ", "Appendix "))
        assert "no page numbers" in source["page_note"]
        assert source["caption"]


def test_rows_are_the_full_grid_of_the_tables_methods_datasets_and_shots(table):
    keys = [(r["method"], r["dataset"], r["shots"]) for r in table["rows"]]
    assert len(keys) == len(set(keys)), "duplicate rows"
    assert set(keys) == set(itertools.product(table["methods"], table["datasets"], table["shots"]))
    for method in table["methods"]:
        assert canonical_method(method) == method
        assert canonical_method(table["methods"][method]) == method, "paper label must resolve too"
    for dataset in table["datasets"]:
        assert canonical_dataset(dataset) == dataset
    for row in table["rows"]:
        for metric in table["metrics"]:
            value = row[metric]
            assert value is None or (isinstance(value, float) and 0 < value <= 100), row
            assert value is not None or row["note"], "a gap needs a note"


def test_every_mismatch_is_a_listed_paper_inconsistency(table):
    found, listed = _mismatches(table), _listed(table)
    assert set(found) == set(listed), (
        f"new mismatches (transcription errors?): {sorted(set(found) - set(listed))}; "
        f"listed but not mismatching: {sorted(set(listed) - set(found))}"
    )
    rows = {(r["method"], r["dataset"], r["shots"]): r for r in table["rows"]}
    for key, entry in listed.items():
        printed, computed = found[key]
        assert entry["printed"] == printed == rows[key[1:4]][key[4]]
        assert entry["computed"] == pytest.approx(computed, abs=0.01)
        assert len(entry["reason"]) > 40


def test_the_checks_catch_a_transcription_error():
    table1 = load_table("table1")
    row = _row(table1, "CLIPFit", "DescribableTextures", 16)
    row["base"] += 1.0
    found = _mismatches(table1)
    assert ("hm", "CLIPFit", "DescribableTextures", 16, "hm") in found
    assert ("average", "CLIPFit", "Average", 16, "base") in found

    table10 = load_table("table10")
    row = _row(table10, "CoOp", "EuroSAT", 4)
    row["accuracy"] = 86.62  # a slipped digit: 68.62 -> 86.62
    assert set(_mismatches(table10)) == {("average", "CoOp", "Average", 4, "accuracy")}


def test_known_inconsistencies_are_the_papers():
    counts = {stem: len(load_table(stem)["known_inconsistencies"]) for stem in paper.TABLES}
    assert counts == {
        "table1": 7, "table11": 7, "table12": 9, "table10": 0, "table2": 0, "table9": 0, "table3": 0
    }


def test_gaps_are_exactly_the_lost_2shot_coop_cells():
    gaps = {
        (stem, r["method"], r["dataset"], r["shots"])
        for stem in paper.TABLES
        for r in load_table(stem)["rows"]
        if any(r[m] is None for m in load_table(stem)["metrics"])
    }
    assert gaps == {
        ("table10", "CoOp", dataset, 2)
        for dataset in ("StanfordCars", "SUN397", "DescribableTextures", "Average")
    }


def test_table2_is_table10s_average_column():
    table10 = {
        (r["method"], r["shots"]): r["accuracy"]
        for r in load_table("table10")["rows"]
        if r["dataset"] == "Average"
    }
    table2 = {(r["method"], r["shots"]): r["accuracy"] for r in load_table("table2")["rows"]}
    assert set(table2) == set(table10)
    differing = {k for k in table2 if table10[k] is not None and table10[k] != table2[k]}
    assert differing == set()


def test_reconstructed_headers_are_noted():
    for stem in ("table2", "table3", "table9"):
        assert any("Header reconstructed" in note for note in load_table(stem)["notes"]), stem
    assert load_table("table3")["average"]["of"] == ["ImageNet", "ImageNetV2", "ImageNetSketch"]
    assert "ImageNet" not in load_table("table9")["average"]["of"]


def test_lookup_returns_every_transcribed_value():
    for stem in paper.TABLES:
        table = load_table(stem)
        for row, metric in itertools.product(table["rows"], table["metrics"]):
            if row[metric] is not None:
                got = lookup(row["method"], table["setting"], row["dataset"], metric, shots=row["shots"])
                assert got == row[metric], (stem, row, metric)


def test_headline_numbers():
    metrics = ("base", "new", "hm")
    assert [lookup("ZeroshotCLIP", "base2new", "Average", m) for m in metrics] == [69.34, 74.22, 71.70]
    assert [lookup("CLIPFit", "base2new", "Average", m) for m in metrics] == [83.72, 74.84, 79.03]


@pytest.mark.parametrize("dassl, short", DASSL_AND_SHORT_NAMES)
def test_dataset_names_resolve_in_both_styles(dassl, short):
    assert canonical_dataset(dassl) == dassl
    assert canonical_dataset(short) == dassl


def test_lookup_accepts_both_name_styles():
    assert lookup("CLIPFit", "base2new", "DescribableTextures", "hm") == 71.56
    assert lookup("CLIPFit", "base2new", "dtd", "hm") == 71.56
    assert lookup("CLIPFit", "fewshot", "oxford_flowers", shots=1) == 82.83
    assert lookup("CLIPFit", "fewshot", "OxfordFlowers", shots=1) == 82.83
    assert lookup("CLIPFit", "dg", "imagenet_sketch") == lookup("CLIPFit", "dg", "ImageNetSketch") == 48.87
    assert lookup("CoOp", "xd", "fgvc_aircraft") == lookup("CoOp", "xd", "FGVCAircraft") == 18.47
    for label in ("CLIP_Adapter", "CLIP-Adapter", "clip_adapter", "Adapter"):
        assert lookup(label, "base2new", "Average", "new") == 70.61
    assert lookup("TIP-adapter", "fewshot", "Average") == lookup("Tip-Adapter", "fewshot", "avg") == 81.15
    assert lookup("CLIP", "dg", "imagenetv2") == lookup("ZeroshotCLIP", "dg", "ImageNetV2") == 60.83


def test_lookup_picks_the_table_for_the_shots():
    base = [lookup("CLIPFit", "base2new", "imagenet", "base", shots=s) for s in (4, 8, 16)]
    assert base == [75.03, 75.73, 76.2]
    accuracy = [lookup("KgCoOp", "fewshot", "eurosat", shots=s) for s in (1, 2, 4, 8, 16)]
    assert accuracy == [60.83, 68.97, 71.06, 72.37, 74.93]
    assert lookup("ProGrad", "fewshot", "ucf101", shots=8) == 88.64
    assert lookup("CLIPFit", "xd", "ImageNet") == 71.10  # beta 8 (Table 9) ...
    assert lookup("CLIPFit", "dg", "ImageNet") == 71.53  # ... and beta 2 (Table 3)


def test_zero_shot_clip_does_not_depend_on_shots():
    assert lookup("ZeroshotCLIP", "base2new", "imagenet", "hm", shots=4) == 70.22
    assert lookup("ZeroshotCLIP", "base2new", "imagenet", "hm", shots=16) == 70.22


def test_lookup_gaps_and_the_table2_fallback():
    assert lookup("CoOp", "fewshot", "stanford_cars", shots=2) is None
    assert lookup("CoOp", "fewshot", "Average", shots=2) == 70.13  # lost from Table 10, printed in Table 2
    assert lookup("CoOp", "fewshot", "imagenet", shots=2) == 68.17


def test_lookup_returns_none_where_the_paper_has_no_number():
    assert lookup("MaPLe", "base2new", "imagenet", "hm", shots=4) is None
    assert lookup("MaPLe", "fewshot", "imagenet") is None
    assert lookup("MyTrainer", "base2new", "imagenet", "hm") is None
    assert lookup("CLIPFit", "base2new", "my_dataset", "hm") is None
    assert lookup("CLIPFit", "dg", "imagenet_a") is None
    assert lookup("CLIPFit", "fewshot", "imagenet", shots=3) is None
    assert lookup("CLIPFit", "xd", "caltech101", shots=4) is None


def test_lookup_rejects_unknown_settings_and_metrics():
    with pytest.raises(ValueError, match="base2new, fewshot, xd, dg"):
        lookup("CLIPFit", "cross_dataset", "imagenet")
    with pytest.raises(ValueError, match="base, new, hm"):
        lookup("CLIPFit", "base2new", "imagenet", "accuracy")
    with pytest.raises(ValueError, match="accuracy"):
        lookup("CLIPFit", "fewshot", "imagenet", "hm")
    assert lookup("CLIPFit", "base2new", "imagenet", "H") == 73.06
    assert lookup("CLIPFit", "BASE2NEW", "imagenet", "hm") == 73.06


def test_settings():
    got = settings()
    assert got["base2new"] == {
        "tables": ["Table 1", "Table 11", "Table 12"], "shots": [4, 8, 16], "metrics": ["base", "new", "hm"]
    }
    assert got["fewshot"] == {
        "tables": ["Table 10", "Table 2"], "shots": [1, 2, 4, 8, 16], "metrics": ["accuracy"]
    }
    assert got["xd"] == {"tables": ["Table 9"], "shots": [16], "metrics": ["accuracy"]}
    assert got["dg"] == {"tables": ["Table 3"], "shots": [16], "metrics": ["accuracy"]}


def test_load_table_by_label_returns_a_copy():
    table = load_table("Table 1")
    assert table == load_table("table1")
    table["rows"].clear()
    assert load_table("table1")["rows"] and lookup("CLIPFit", "base2new", "Average", "hm") == 79.03
    with pytest.raises(ValueError, match="table1"):
        load_table("Table 4")


def test_known_inconsistency_entries_are_self_describing():
    for stem in paper.TABLES:
        for entry in load_table(stem)["known_inconsistencies"]:
            fields = {"check", "method", "dataset", "shots", "metric", "printed", "computed", "reason"}
            assert set(entry) == fields
            assert entry["check"] in ("hm", "average")
