"""Failed commands leave no empty folders behind, and never remove what they did not create."""

import pytest

from mrirecon.core.atomic import check_writable_folder, no_empty_folders_left


def test_a_failure_removes_the_empty_folders_it_created_and_nothing_else(tmp_path):
    target = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(KeyboardInterrupt):
        with no_empty_folders_left(target):
            check_writable_folder(target)
            (target / "split").mkdir()
            raise KeyboardInterrupt
    assert not (tmp_path / "new").exists()
    # A folder holding a file stays with the file; a folder that existed before stays.
    (tmp_path / "kept").mkdir()
    with pytest.raises(ValueError):
        with no_empty_folders_left(tmp_path / "kept" / "out"):
            check_writable_folder(tmp_path / "kept" / "out" / "a")
            check_writable_folder(tmp_path / "kept" / "out" / "b")
            (tmp_path / "kept" / "out" / "b" / "result.csv").write_text("1")
            raise ValueError("late failure")
    assert (tmp_path / "kept" / "out" / "b" / "result.csv").read_text() == "1"
    assert not (tmp_path / "kept" / "out" / "a").exists()
    with pytest.raises(ValueError):
        with no_empty_folders_left(tmp_path / "kept"):
            raise ValueError
    assert (tmp_path / "kept").is_dir()


def test_success_keeps_the_folders(tmp_path):
    with no_empty_folders_left(tmp_path / "out"):
        check_writable_folder(tmp_path / "out")
    assert (tmp_path / "out").is_dir()
