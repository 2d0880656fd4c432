"""The transcription of the paper's Tables 1-4: the reference file equals the code, the tables have the
paper's shape, every number equals the paper's text (when the text is beside the checkout), and the
accessors answer unknown names with the closest known ones."""

import json
import re
from pathlib import Path

import pytest

from echobench.reporting import paper_reference as pr
from echobench.errors import EchobenchError

REPO = Path(__file__).resolve().parents[1]
PAPER_TEXT = REPO.parent / "shared" / "paper" / "echoalign-paper.txt"  # the paper's text beside the checkout, when present
REFERENCE = REPO / "reports" / "reference"

# A cell as the text extraction prints it: "73.17 ± 1.13", "$\underline{90.98 \pm 0.20}$", "$\overline{67.96\pm1.88}$".
CELL = re.compile(r"^\$?(?:\\(?:underline|overline)\{)?(\d+(?:\.\d+)?)\s*(?:±|\\pm)\s*(\d+(?:\.\d+)?)\}?\$?$")


@pytest.fixture(scope="module")
def paper_text() -> str:
    if not PAPER_TEXT.exists():
        pytest.skip("the paper's text is not beside the checkout")
    return PAPER_TEXT.read_text(encoding="utf-8")


def _between(text: str, start: str, end: str) -> list[str]:
    return text[text.index(start):text.index(end)].splitlines()


def _accuracy_rows(lines: list[str]) -> list[tuple[str, str, list[tuple[float, float]]]]:
    """(first column, method row name, [(mean, std), ...]) for every row whose second column is a method."""
    rows = []
    for line in lines:
        fields = line.split("\t")
        if len(fields) > 2 and fields[1] in pr.METHOD_NAMES:
            cells = [CELL.match(f.strip()) for f in fields[2:]]
            assert all(cells), f"unparsed cell in {line!r}"
            rows.append((fields[0], fields[1], [(float(m.group(1)), float(m.group(2))) for m in cells]))
    return rows


def _check_block(rows, dataset_label: str, expected: dict[str, tuple], columns: int) -> None:
    # One block per dataset: the twelve methods in the paper's order, the dataset's name on one of them
    # (the extraction of a multirow label), `columns` cells each.
    assert [name for _, name, _ in rows] == list(pr.METHOD_NAMES)
    assert [label for label, _, _ in rows if label] == [dataset_label]
    for _, name, cells in rows:
        assert len(cells) == columns
        assert tuple(cells) == expected[pr.METHOD_NAMES[name]], name


def test_table1_every_number_matches_the_paper_text(paper_text):
    lines = _between(paper_text, "Table 1: Comparison", "Table 2: Comparison")
    assert "Datasets\tMethods\t30%\t50%\t45%\t30%\t50%" in lines  # symmetric 30/50, pairflip 45, instance 30/50
    groups = next(line for line in lines if "Pairflip" in line and "Methods" not in line)
    assert groups.index("Symr") < groups.index("Pairflip") < groups.index("Insta")  # split headers, in order
    rows = _accuracy_rows(lines)
    assert len(rows) == 24
    _check_block(rows[:12], "CIFAR-10", pr.TABLE1["cifar10"], 5)
    _check_block(rows[12:], "CIFAR-100", pr.TABLE1["cifar100"], 5)


def test_table2_every_number_matches_the_paper_text(paper_text):
    lines = _between(paper_text, "Table 2: Comparison", "Table 3: Comparison")
    assert "Datasets\tMethods\tRandom 1\tRandom 2\tRandom 3\tWorst" in lines
    rows = _accuracy_rows(lines)
    assert len(rows) == 12
    _check_block(rows, "CIFAR-10N", pr.TABLE2["cifar10n"], 4)


def test_table3_every_number_matches_the_paper_text(paper_text):
    lines = _between(paper_text, "Table 3: Comparison", "results in Table 3 revealed")
    header = "\tCIFAR-10 Pairflip-45%\tCIFAR-10 IDN-50%\tCIFAR-100 Pairflip-45%\tCIFAR-100 IDN-50%"
    assert header in lines
    assert pr.TABLE3_SETTINGS == (("cifar10", "pairflip:0.45"), ("cifar10", "instance:0.5"),
                                  ("cifar100", "pairflip:0.45"), ("cifar100", "instance:0.5"))
    table = {}
    for line in lines:
        name, *cells = line.split("\t")
        if name in pr.ABLATION_NAMES:
            table[pr.ABLATION_NAMES[name]] = tuple(float(c) for c in cells)
    assert table == pr.TABLE3
    assert list(table) == list(pr.TABLE3)  # the paper's row order


def test_table4_every_number_matches_the_paper_text(paper_text):
    lines = _between(paper_text, "Table 4: Comparison", "Figure 4:")
    assert "\t\tBLTM\tOurs" in lines and "CIFAR-10 instance-dependent noise" in lines[0]
    rows, rate = [], None
    for line in lines:
        m = re.fullmatch(r"(?:IDN-(\d+)%)?\t(\d+)%\t(\d+) / (\d+)\t(\d+) / (\d+)", line)
        if m:
            rate = m.group(1) or rate  # the noise rate is printed on the first row of its group only
            assert int(m.group(4)) == int(m.group(6)) == pr.TABLE4_TOTAL
            rows.append((f"instance:{int(rate) / 100:g}", int(m.group(2)) / 100,
                         {"bltm": int(m.group(3)), "echoselect": int(m.group(5))}))
    assert tuple(rows) == pr.TABLE4


def test_prose_beside_the_tables(paper_text):
    # Section 5.3: "almost twice" at IDN 30%, 99%; section 5.1: three seeds; appendix C's tau per noise rate.
    assert "the number of samples selected by EchoSelect was almost twice that of BLTM" in paper_text
    ratio = pr.paper_selected("instance:0.3", 0.99, "echoselect") / pr.paper_selected("instance:0.3", 0.99, "bltm")
    assert 1.7 < ratio < 2
    assert "All experiments were repeated three times under different random seeds" in paper_text
    # The note on section 5.2's "45% symmetric noise on CIFAR-100" quotes the text as it is.
    assert "45% symmetric noise on CIFAR-100" in paper_text
    assert any("45% symmetric noise on CIFAR-100" in n for n in pr.TABLE1_NOTES)


def test_reference_file_is_the_transcription():
    assert json.loads((REFERENCE / "paper_tables.json").read_text(encoding="utf-8")) == pr.paper_tables()


def test_write_reference_round_trips(tmp_path):
    path = pr.write_reference(tmp_path / "ref")
    assert path == tmp_path / "ref" / "paper_tables.json"
    assert json.loads(path.read_text(encoding="utf-8")) == pr.paper_tables()
    assert [p.name for p in path.parent.iterdir()] == ["paper_tables.json"]  # no temporary file left


def test_shapes():
    doc = pr.paper_tables()
    methods = ["ce", "apl", "pce", "aul", "celc", "t-revision", "identifiability", "joint", "co-teaching", "sigua",
               "co-dis", "echoalign"]
    assert list(pr.METHODS) == methods and list(pr.METHOD_NAMES)[-1] == "Ours"
    t1, t2, t3, t4 = (doc[t] for t in pr.TABLES)
    # Table 1: 12 methods x 10 columns (2 datasets x 5 noises), every cell with a mean and a std.
    assert t1["methods"] == methods and t1["datasets"] == ["cifar10", "cifar100"]
    assert t1["noises"] == ["symmetric:0.3", "symmetric:0.5", "pairflip:0.45", "instance:0.3", "instance:0.5"]
    assert {d: {n: sorted(c) for n, c in by_noise.items()} for d, by_noise in t1["cells"].items()} == {
        d: {n: sorted(methods) for n in t1["noises"]} for d in t1["datasets"]}
    assert len(pr.paper_cells(1)) == 120
    # Table 2: 12 methods x 4 label sets of CIFAR-10N.
    assert t2["noises"] == ["human:random1", "human:random2", "human:random3", "human:worst"]
    assert list(t2["cells"]) == ["cifar10n"] and len(pr.paper_cells(2)) == 48
    for cell in pr.paper_cells(1) + pr.paper_cells(2):
        assert 0 < cell["mean"] < 100 and 0 <= cell["std"] < 10, cell
    # Table 3: 4 rows x 4 settings, means only.
    assert t3["methods"] == ["ce", "im-only", "echoselect-only", "echoalign"] and len(t3["settings"]) == 4
    cells3 = pr.paper_cells(3)
    assert len(cells3) == 16 and all(c["std"] is None and 0 < c["mean"] < 100 for c in cells3)
    # Table 4: 2 noise rates x 2 precisions, BLTM and EchoSelect, out of 50,000.
    assert [(r["noise"], r["precision"]) for r in t4["rows"]] == [
        ("instance:0.3", 0.96), ("instance:0.3", 0.99), ("instance:0.5", 0.94), ("instance:0.5", 0.98)]
    assert all(sorted(r["selected"]) == ["bltm", "echoselect"] for r in t4["rows"]) and t4["total"] == 50_000
    assert all(doc[t]["notes"] for t in pr.TABLES)


def test_registry_names_exist():
    from echobench.data import DATASETS
    from echobench.echoalign.echoselect import TABLE4_PRECISIONS
    from echobench.training.method import METHODS
    from echobench.data.noise import NoiseSpec
    from echobench.training.selectors import SELECTORS

    assert set(pr.METHODS) | set(pr.TABLE3) <= set(METHODS.names())
    assert {"cifar10", "cifar100", "cifar10n"} <= set(DATASETS.names())
    for noise in (*pr.TABLE1_NOISES, *pr.TABLE2_NOISES):
        assert str(NoiseSpec.parse(noise)) == noise
    assert "bltm" in SELECTORS and {p for _, p, _ in pr.TABLE4} <= set(TABLE4_PRECISIONS)


def test_table3_ce_and_echoalign_rows_repeat_table1():
    for (dataset, noise), ce, ours in zip(pr.TABLE3_SETTINGS, pr.TABLE3["ce"], pr.TABLE3["echoalign"]):
        assert pr.paper_value(1, dataset, noise, "ce")[0] == ce
        assert pr.paper_value(1, dataset, noise, "echoalign")[0] == ours


def test_spot_values():
    assert pr.paper_value(1, "cifar10", "symmetric:0.3", "ce") == (73.17, 1.13)
    assert pr.paper_value("table1", "cifar10", "instance:0.5", "echoalign") == (77.81, 0.30)
    assert pr.paper_value(1, "cifar100", "symmetric:0.50", "ce") == (34.5, 0.96)  # noise spec normalised
    assert pr.paper_value(1, "cifar100", "pairflip:0.45", "celc") == (52.53, 3.17)
    assert pr.paper_value(2, "cifar10n", "human:worst", "joint") == (84.29, 0.40)
    assert pr.paper_value(2, "cifar10n", "human:random3", "pce") == (35.47, 0.36)
    assert pr.paper_value(3, "cifar100", "pairflip:0.45", "im-only") == (15.69, None)
    assert pr.paper_value("3", "cifar10", "instance:0.5", "echoselect-only") == (65.77, None)
    assert pr.paper_selected("instance:0.5", 0.98, "bltm") == 5098
    assert pr.paper_selected("instance:0.3", 0.96, "echoselect") == 26524


def test_known_names_without_a_cell_give_none():
    assert pr.paper_value(1, "cifar10n", "human:worst", "ce") is None  # dataset not in Table 1
    assert pr.paper_value(2, "cifar10", "symmetric:0.3", "ce") is None  # dataset not in Table 2
    assert pr.paper_value(1, "cifar10", "symmetric:0.2", "ce") is None  # noise rate not in the table
    assert pr.paper_value(1, "cifar10", "human:aggre", "ce") is None
    assert pr.paper_value(1, "cifar10", "symmetric:0.3", "echoalign-released") is None  # method not in the paper
    assert pr.paper_value(1, "cifar10", "symmetric:0.3", "im-only") is None  # only in Table 3
    assert pr.paper_value(3, "cifar10", "symmetric:0.3", "ce") is None  # setting not in Table 3
    assert pr.paper_selected("instance:0.3", 0.94, "echoselect") is None  # precision only at IDN 50%
    assert pr.paper_selected("instance:0.3", 0.96, "small-loss") is None  # peer the paper did not compare
    assert pr.paper_selected("instance:0.3", 0.96, "bltm", dataset="cifar100") is None


@pytest.mark.parametrize(
    "call,expected",
    [
        (lambda: pr.paper_value(1, "cifar10", "symmetric:0.3", "co-teachng"), "Did you mean 'co-teaching'"),
        (lambda: pr.paper_value(1, "cifar10", "symmetric:0.3", "EchoAlign"), "Did you mean 'echoalign'"),
        (lambda: pr.paper_value(1, "cifar-10", "symmetric:0.3", "ce"), "Did you mean 'cifar10'"),
        (lambda: pr.paper_value(1, "cifar10", "symetric:0.3", "ce"), "Did you mean 'symmetric'"),
        (lambda: pr.paper_value(2, "cifar10n", "human:randm1", "ce"), "Did you mean 'random1'"),
        (lambda: pr.paper_value("tabel1", "cifar10", "symmetric:0.3", "ce"), "Did you mean 'table1'"),
        (lambda: pr.paper_value(5, "cifar10", "symmetric:0.3", "ce"), "unknown paper table 5"),
        (lambda: pr.paper_value(4, "cifar10", "instance:0.3", "echoalign"), "use paper_selected"),
        (lambda: pr.paper_selected("instance:0.3", 0.99, "bltn"), "Did you mean 'bltm'"),
        (lambda: pr.paper_selected("instance:0.3", 99, "bltm"), "must be a fraction"),
    ],
)
def test_unknown_names_raise_with_did_you_mean(call, expected):
    with pytest.raises(EchobenchError, match=re.escape(expected)):
        call()
