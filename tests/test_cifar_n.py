"""CIFAR-N human labels, read from the real files in shared/data/cifar-n (no downloads)."""

from __future__ import annotations

import io
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from echobench.data import cifar; from echobench.data import cifar_n
from echobench.data.base import Dataset
from echobench.errors import EchobenchError

# /work/main/tests/test_cifar_n.py -> /work/shared/data/cifar-n
REAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-n"
URL10 = "https://github.com/UCSC-REAL/cifar-10-100n/raw/main/data/CIFAR-10_human.pt"


def real_file(name: str) -> Path:
    path = REAL_DIR / name
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    return path


@pytest.fixture
def real10() -> Path:
    return real_file("CIFAR-10_human.pt")


@pytest.fixture
def real100() -> Path:
    return real_file("CIFAR-100_human.pt")


@pytest.fixture
def no_network(monkeypatch):
    calls = []

    def unreachable(request, *args, **kwargs):
        calls.append(getattr(request, "full_url", request))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    return calls


def noise_rate(labels: dict[str, np.ndarray], name: str) -> float:
    """Percent of labels that differ from clean_label, to 2 decimals (as published)."""
    return round(100 * float(np.mean(labels[name] != labels["clean"])), 2)


def save_user_file(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    torch = pytest.importorskip("torch")
    torch.save(arrays, path)
    return path


def official_arrays(n: int = 50_000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    keys = cifar_n.FILES["cifar10n"].required
    return {k: rng.integers(0, 10, size=n, dtype=np.int64) for k in keys}


# --- the real files ----------------------------------------------------------------------------


def test_constants_match_notice():
    assert cifar_n.FILES["cifar10n"].url == URL10
    assert cifar_n.FILES["cifar100n"].url.endswith("/data/CIFAR-100_human.pt")
    assert cifar_n.FILES["cifar10n"].size == 2401007 and cifar_n.FILES["cifar100n"].size == 1000959


def test_cifar10n_keys_and_noise_rates(real10):
    labels = cifar_n.read_human_labels("cifar10n", labels_file=real10)
    assert set(labels) == {"clean", "aggre", "random1", "random2", "random3", "worst"}
    for array in labels.values():
        assert array.dtype == np.int64 and array.shape == (50_000,)
    published = {"aggre": 9.01, "random1": 17.23, "random2": 18.12, "random3": 17.64, "worst": 40.21}
    assert {name: noise_rate(labels, name) for name in published} == published


def test_cifar100n_keys_and_noise_rate(real100):
    labels = cifar_n.read_human_labels("cifar100n", labels_file=real100)
    assert set(labels) == {"clean", "noisy"}
    assert labels["clean"].max() == 99
    assert noise_rate(labels, "noisy") == 40.20


def test_file_under_data_root_is_used_without_download(tmp_path, real10, no_network):
    (tmp_path / "cifar-n").mkdir()
    shutil.copy(real10, tmp_path / "cifar-n" / "CIFAR-10_human.pt")
    labels = cifar_n.read_human_labels("cifar10n", root=tmp_path)
    assert noise_rate(labels, "worst") == 40.21
    assert no_network == []


# --- downloading -------------------------------------------------------------------------------


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_download_saves_verified_file(tmp_path, real10, monkeypatch):
    payload = real10.read_bytes()
    seen = {}

    def fake_urlopen(request, timeout=None):
        seen.update(url=request.full_url, timeout=timeout)
        return _Response(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    labels = cifar_n.read_human_labels("cifar10n", root=tmp_path)
    assert seen["url"] == URL10 and seen["timeout"] and seen["timeout"] <= 60
    assert noise_rate(labels, "aggre") == 9.01
    assert [p.name for p in (tmp_path / "cifar-n").iterdir()] == ["CIFAR-10_human.pt"]  # no temp left


def test_download_with_wrong_content_saves_nothing(tmp_path, real10, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout=None: _Response(real10.read_bytes()[:1000]))
    with pytest.raises(EchobenchError, match="Nothing was saved") as info:
        cifar_n.read_human_labels("cifar10n", root=tmp_path)
    assert URL10 in str(info.value) and "--labels-file" in str(info.value)
    assert list((tmp_path / "cifar-n").iterdir()) == []


def test_missing_file_without_network(tmp_path, no_network):
    with pytest.raises(EchobenchError) as info:
        cifar_n.read_human_labels("cifar10n", root=tmp_path)
    message = str(info.value)
    assert no_network == [URL10]
    assert str(tmp_path / "cifar-n" / "CIFAR-10_human.pt") in message
    assert URL10 in message and "--labels-file" in message and "--data-root" in message
    assert "URLError" in message
    assert list((tmp_path / "cifar-n").iterdir()) == []  # the temporary file is cleaned up


def test_missing_file_with_download_off(tmp_path, no_network):
    with pytest.raises(EchobenchError, match="turned off") as info:
        cifar_n.read_human_labels("cifar100n", root=tmp_path, download=False)
    assert "CIFAR-100_human.pt" in str(info.value) and "--labels-file" in str(info.value)
    assert no_network == []


def test_missing_labels_file_names_it(tmp_path, no_network):
    path = tmp_path / "nowhere.pt"
    with pytest.raises(EchobenchError, match="nowhere.pt") as info:
        cifar_n.read_human_labels("cifar10n", labels_file=path)
    assert URL10 in str(info.value)
    assert no_network == []  # an explicit file is never downloaded


# --- bad files ---------------------------------------------------------------------------------


def test_truncated_file_fails_size_check(tmp_path, real10):
    bad = tmp_path / "CIFAR-10_human.pt"
    bad.write_bytes(real10.read_bytes()[:-100])
    with pytest.raises(EchobenchError, match=r"2400907 bytes.*2401007 bytes") as info:
        cifar_n.read_human_labels("cifar10n", labels_file=bad)
    assert str(bad) in str(info.value) and "truncated" in str(info.value)


def test_flipped_byte_fails_sha256_check(tmp_path, real10):
    raw = bytearray(real10.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    bad = tmp_path / "CIFAR-10_human.pt"
    bad.write_bytes(bytes(raw))
    with pytest.raises(EchobenchError, match="sha256") as info:
        cifar_n.read_human_labels("cifar10n", labels_file=bad)
    message = str(info.value)
    assert str(bad) in message and cifar_n.FILES["cifar10n"].sha256 in message and "verify=False" in message


def test_user_file_missing_key(tmp_path):
    arrays = official_arrays()
    del arrays["worse_label"], arrays["random_label2"]
    path = save_user_file(tmp_path / "mine.pt", arrays)
    with pytest.raises(EchobenchError, match=r"lacks the keys worse_label, random_label2") as info:
        cifar_n.read_human_labels("cifar10n", labels_file=path, verify=False)
    assert str(path) in str(info.value)


def test_user_file_is_checked_unless_verify_off(tmp_path):
    path = save_user_file(tmp_path / "mine.pt", official_arrays())
    with pytest.raises(EchobenchError, match="bytes"):
        cifar_n.read_human_labels("cifar10n", labels_file=path)
    labels = cifar_n.read_human_labels("cifar10n", labels_file=path, verify=False)
    np.testing.assert_array_equal(labels["worst"], official_arrays()["worse_label"])


def test_user_file_wrong_length(tmp_path):
    arrays = official_arrays()
    arrays["aggre_label"] = arrays["aggre_label"][:49_999]
    path = save_user_file(tmp_path / "mine.pt", arrays)
    with pytest.raises(EchobenchError, match=r"aggre_label .*shape \(49999,\).*\(50000,\)"):
        cifar_n.read_human_labels("cifar10n", labels_file=path, verify=False)


def test_user_file_label_out_of_range(tmp_path):
    arrays = official_arrays()
    arrays["random_label3"][7] = 10
    path = save_user_file(tmp_path / "mine.pt", arrays)
    with pytest.raises(EchobenchError, match=r"random_label3 has labels from 0 to 10, expected 0..9"):
        cifar_n.read_human_labels("cifar10n", labels_file=path, verify=False)


def test_cifar100_file_read_as_cifar10n_is_refused(real100):
    with pytest.raises(EchobenchError, match="bytes"):
        cifar_n.read_human_labels("cifar10n", labels_file=real100)
    with pytest.raises(EchobenchError, match="lacks the keys"):
        cifar_n.read_human_labels("cifar10n", labels_file=real100, verify=False)


def test_unknown_label_file_name():
    with pytest.raises(EchobenchError, match="cifar10n, cifar100n"):
        cifar_n.read_human_labels("cifar10h")


# --- matching labels to images -----------------------------------------------------------------


def test_clean_label_check():
    train = np.array([0, 1, 2, 3, 4], dtype=np.int64)
    cifar_n.check_clean_labels("cifar10n", train.copy(), train, source="x.pt")
    wrong = train.copy()
    wrong[[2, 4]] = 9
    with pytest.raises(EchobenchError, match=r"x\.pt.*2 of 5 images \(first at image 2: 9 vs 2\).*does not belong"):
        cifar_n.check_clean_labels("cifar10n", wrong, train, source="x.pt")
    with pytest.raises(EchobenchError, match="4 entries"):
        cifar_n.check_clean_labels("cifar100n", train[:4], train, source="x.pt")


def _tiny_dataset(name: str, train_labels: np.ndarray, num_classes: int) -> Dataset:
    """A stand-in for CIFAR: the right labels on 1x1 images (the real 180 MB are not available)."""
    n = train_labels.shape[0]
    return Dataset(
        name, [f"c{i}" for i in range(num_classes)],
        np.zeros((n, 1, 1, 3), np.uint8), train_labels.astype(np.int64),
        np.zeros((2, 1, 1, 3), np.uint8), np.zeros(2, np.int64),
    )


def test_load_cifar10n_attaches_label_sets(tmp_path, real10, monkeypatch):
    clean = cifar_n.read_human_labels("cifar10n", labels_file=real10)["clean"]
    monkeypatch.setattr(cifar, "load_cifar10", lambda root, download=True: _tiny_dataset("cifar10", clean, 10))
    ds = cifar_n.load_cifar10n(tmp_path, labels_file=real10)
    assert ds.name == "cifar10n"
    assert set(ds.extras["human_labels"]) == {"aggre", "random1", "random2", "random3", "worst"}
    assert ds.extras["human_labels_file"] == str(real10)
    assert np.mean(ds.extras["human_labels"]["worst"] != ds.train_labels) == pytest.approx(0.4021, abs=1e-4)


def test_load_cifar100n_refuses_mismatched_images(tmp_path, real100, monkeypatch):
    clean = cifar_n.read_human_labels("cifar100n", labels_file=real100)["clean"]
    shuffled = np.random.default_rng(0).permutation(clean)
    monkeypatch.setattr(cifar, "load_cifar100", lambda root, download=True: _tiny_dataset("cifar100", shuffled, 100))
    with pytest.raises(EchobenchError, match="does not belong to these images"):
        cifar_n.load_cifar100n(tmp_path, labels_file=real100)
