"""The paper's suites: cell counts, and cells shared between tables computed once."""

import pytest

from echobench.harness.suite import load_suite


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


def test_dry_run_counts_distinct_echomod_pairs(cli):
    import json

    import numpy as np

    from echobench.data.noise import split_train_val
    from echobench.harness.train_cell import get_dataset, make_noisy_labels
    from echobench.seeding import numpy_rng
    from echobench.harness.suite import parse_suite

    raw = {"name": "pairs", "datasets": {"shapes": {"n_train": 500, "n_test": 50}},
           "noise": ["symmetric:0.3", "symmetric:0.5"], "methods": ["ce", "echoalign", "im-only"], "seeds": [1],
           "protocol": "smoke"}
    cells = parse_suite(raw, "test").expand()
    from echobench.reporting.dry_run import dry_run_summary

    summary = dry_run_summary(cells)
    (key, pairs), = summary["echomod"]["pairs"].items()
    # independent count: the training split is the same for both settings (same seed), so the union
    # is every training index once plus the indices whose two noisy labels differ
    a, b = (c for c in cells if c.method == "echoalign")
    data = get_dataset("shapes", a.dataset_options, None)
    train, _ = split_train_val(500, numpy_rng(1, "split"), 0.1)
    la, lb = (make_noisy_labels(c, data).labels[train] for c in (a, b))
    assert pairs == len(train) + int(np.sum(la != lb))
    assert summary["echomod"]["requested"][key] == 4 * len(train)  # 2 aligning methods × 2 settings
    assert summary["cells_per_method"] == {"ce": 2, "echoalign": 2, "im-only": 2}
    # the CLI prints the same in JSON; a dataset that is not on disk is reported, never downloaded
    code, out, _ = cli("run", "--suite", "table3", "--dry-run", "--json", "--data-root", "/nonexistent-data-root")
    doc = json.loads(out)
    assert code == 0 and doc["cells_per_method"]["im-only"] == 12 and set(doc["echomod"]["unavailable"]) == {"cifar10", "cifar100"}


def test_paper_dry_run_lists_the_selection_and_runtime_cells(cli):
    """`paper` is Tables 1-3's 528 training cells plus Table 4's selection cells (CIFAR-10 × IDN 30/50% ×
    three seeds: 6) and the runtime suite's cells (Tables 6/7: the device's variant; on CPU `tiny` at batch
    1 and 4, on a GPU SD 1.5 at 256/512/768 px × batch 1/8/16). The training part is unchanged."""
    import json

    code, out, _ = cli("run", "--suite", "paper", "--dry-run", "--json", "--device", "cpu",
                       "--data-root", "/nonexistent-data-root")
    doc = json.loads(out)
    assert code == 0 and doc["cells_per_kind"] == {"train": 528, "selection": 6, "runtime": 2} and doc["cells"] and len(doc["cells"]) == 536
    assert sum(doc["cells_per_method"].values()) == 528
    assert {r["run_id"] for r in doc["cells"] if r["kind"] == "train"} == set(ids("paper"))
    selection = [r for r in doc["cells"] if r["kind"] == "selection"]
    assert {(r["dataset"], r["noise"]) for r in selection} == {("cifar10", "instance:0.3"), ("cifar10", "instance:0.5")}
    # the selection cells' pairs are counted with the training cells' (reported unavailable here, never downloaded)
    assert set(doc["echomod"]["unavailable"]) == {"cifar10", "cifar100", "cifar10n"}
    code, out, _ = cli("run", "--suite", "paper", "--dry-run", "--json", "--device", "cuda",
                       "--data-root", "/nonexistent-data-root")
    doc = json.loads(out)
    assert doc["cells_per_kind"] == {"train": 528, "selection": 6, "runtime": 9}
    assert {(r["config"], r["resolution"], r["batch_size"]) for r in doc["cells"] if r["kind"] == "runtime"} == {
        ("sd15", r, b) for r in (256, 512, 768) for b in (1, 8, 16)}


def write_full_cifar(root, name, train_labels, monkeypatch, seed=0):
    """A CIFAR-format folder of the official size (50,000 + 10,000 random images; `train_labels` in the
    official file order), with the md5 checks pointed at these files."""
    import dataclasses
    import hashlib
    import pickle

    import numpy as np

    from echobench.data import cifar

    rng = np.random.default_rng(seed)
    spec = cifar._spec(name)
    folder = root / spec.folder
    folder.mkdir(parents=True)
    classes = 10 if name == "cifar10" else 100
    per_file = 50_000 // len(spec.train_files)
    parts = [(f, train_labels[k * per_file:(k + 1) * per_file]) for k, (f, _) in enumerate(spec.train_files)]
    parts += [(f, rng.integers(0, classes, 10_000)) for f, _ in spec.test_files]
    for filename, labels in parts:
        entry = {b"batch_label": filename.encode(), spec.labels_key.encode(): [int(x) for x in labels],
                 b"data": rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8),
                 b"filenames": [b"img.png"] * len(labels)}
        (folder / filename).write_bytes(pickle.dumps(entry, protocol=2))
    names = [f"class_{i}".encode() for i in range(classes)]
    (folder / spec.meta_file).write_bytes(pickle.dumps({spec.names_key.encode(): names}, protocol=2))

    def md5(f):
        return hashlib.md5((folder / f).read_bytes()).hexdigest()

    patched = dataclasses.replace(spec, train_files=tuple((f, md5(f)) for f, _ in spec.train_files),
                                  test_files=tuple((f, md5(f)) for f, _ in spec.test_files),
                                  meta_md5=md5(spec.meta_file))
    before = cifar._spec
    monkeypatch.setattr(cifar, "_spec", lambda n, before=before: patched if n == name else before(n))


@pytest.mark.slow  # 25 s on official-sized data; the small-data dry-run tests run by default
def test_paper_dry_run_pair_counts_on_official_sized_data(cli, tmp_path, monkeypatch, cifar10n_file):
    """The paper suite's distinct EchoMod pairs per dataset, on CIFAR-format data of the official sizes
    (random images; CIFAR-10's labels are the real CIFAR-10N file's clean labels, so that its human
    label sets load), counted here independently: for each dataset, the union over the aligning
    settings (Table 1's five noise settings, Table 2's four label sets, × three seeds; Tables 3 and 4
    add no setting) of (training index, noisy label)."""
    import json
    import shutil
    from types import SimpleNamespace

    import numpy as np

    from echobench.data.cifar_n import read_human_labels
    from echobench.data.noise import split_train_val
    from echobench.harness.train_cell import get_dataset, make_noisy_labels
    from echobench.seeding import numpy_rng

    clean10 = read_human_labels("cifar10n", labels_file=cifar10n_file)["clean"]
    write_full_cifar(tmp_path, "cifar10", clean10, monkeypatch)
    write_full_cifar(tmp_path, "cifar100", np.random.default_rng(1).integers(0, 100, 50_000), monkeypatch, seed=1)
    (tmp_path / "cifar-n").mkdir()
    shutil.copy(cifar10n_file, tmp_path / "cifar-n" / "CIFAR-10_human.pt")

    code, out, err = cli("run", "--suite", "paper", "--dry-run", "--json", "--device", "cpu", "--data-root", tmp_path)
    assert code == 0, err
    doc = json.loads(out)["echomod"]
    assert doc["unavailable"] == {}

    table1 = ["symmetric:0.3", "symmetric:0.5", "pairflip:0.45", "instance:0.3", "instance:0.5"]
    table2 = ["human:random1", "human:random2", "human:random3", "human:worst"]
    expected = {}
    for dataset, noises in (("cifar10", table1), ("cifar100", table1), ("cifar10n", table2)):
        data = get_dataset(dataset, {"download": False}, str(tmp_path))
        pairs = set()
        for noise in noises:
            for seed in (1, 2, 3):
                labels = make_noisy_labels(SimpleNamespace(noise=noise, seed=seed), data).labels
                train, _ = split_train_val(50_000, numpy_rng(seed, "split"), 0.1)
                pairs.update(zip(train.tolist(), labels[train].tolist()))
        expected[dataset] = len(pairs)
    assert sorted(doc["pairs"].values()) == sorted(expected.values())
    assert sum(doc["pairs"].values()) == doc["total_pairs"] == doc["diffusion_pairs"]
    # requested: 45,000 per aligning cell (echoalign 42, im-only 12, echoselect-only 12) and selection cell (6)
    assert sum(doc["requested"].values()) == 45_000 * (42 + 12 + 12 + 6)
    assert doc["projected_gpu_hours"]["v100"] == pytest.approx(doc["total_pairs"] * 1.2384 / 3600, rel=1e-3)
