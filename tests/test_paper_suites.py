"""The paper's suites: cell counts, and cells shared between tables computed once."""

from echobench.suite import load_suite


def ids(name):
    return {c.run_id: c for c in load_suite(name).expand()}


def test_paper_suite_cell_counts_and_sharing():
    t1, t2, t3, paper = ids("table1"), ids("table2"), ids("table3"), ids("paper")
    assert len(t1) == 2 * 5 * 12 * 3 == 360  # datasets × noise settings × methods × seeds
    assert len(t2) == 4 * 12 * 3 == 144
    assert len(t3) == 2 * 2 * 4 * 3 == 48
    shared = set(t3) & set(t1)  # CE and EchoAlign at pairflip 45% / IDN 50% are Table 1's cells
    assert len(shared) == 2 * 2 * 2 * 3 and {t1[i].method for i in shared} == {"ce", "echoalign"}
    assert set(paper) == set(t1) | set(t2) | set(t3) and len(paper) == 528
    assert {c.protocol["name"] for c in paper.values()} == {"paper"}
    assert {c.protocol["model"] for c in paper.values()} == {"auto"}  # ResNet-18 / ResNet-34 by class count
