"""io.atomic_dir: a folder appears whole or not at all, replaces an old one, and a failure leaves the old one."""

import os

import pytest

from dallebrain.data import io


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_a_new_folder_appears_only_when_the_block_finishes(tmp_path):
    target = tmp_path / "sub" / "cache"
    with io.atomic_dir(target) as tmp:
        assert tmp.is_dir() and not any(tmp.iterdir()) and tmp.parent == target.parent
        (tmp / "a.npy").write_text("new")
        assert not target.exists()
    assert (target / "a.npy").read_text() == "new" and _leftovers(target.parent) == []


def test_an_old_folder_is_replaced_whole(tmp_path):
    target = tmp_path / "unet"
    target.mkdir()
    (target / "old.json").write_text("old")
    with io.atomic_dir(target) as tmp:
        (tmp / "new.json").write_text("new")
        assert (target / "old.json").exists()  # still readable while the new one is written
    assert sorted(p.name for p in target.iterdir()) == ["new.json"] and _leftovers(tmp_path) == []


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_block_leaves_the_old_folder_and_no_temporary_one(tmp_path, existing):
    target = tmp_path / "cache"
    if existing:
        target.mkdir()
        (target / "meta.json").write_text("old")
    with pytest.raises(RuntimeError, match="killed"):
        with io.atomic_dir(target) as tmp:
            (tmp / "half.npy").write_text("half")
            raise RuntimeError("killed")
    assert _leftovers(tmp_path) == []
    if existing:
        assert sorted(p.name for p in target.iterdir()) == ["meta.json"]
    else:
        assert not target.exists()


def test_when_the_new_folder_cannot_take_its_place_the_old_one_is_put_back(tmp_path, monkeypatch):
    target = tmp_path / "vae"
    target.mkdir()
    (target / "config.json").write_text("old")
    real_replace, calls = os.replace, []

    def flaky_replace(src, dst):
        calls.append(src)
        if len(calls) == 2:  # the first moves the old folder aside, the second would put the new one in place
            raise OSError("disk gone")
        return real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", flaky_replace)
    with pytest.raises(OSError, match="disk gone"):
        with io.atomic_dir(target) as tmp:
            (tmp / "config.json").write_text("new")
    assert (target / "config.json").read_text() == "old" and _leftovers(tmp_path) == []
