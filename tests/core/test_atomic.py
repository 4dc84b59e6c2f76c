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


def test_the_processes_of_a_distributed_run_share_one_staging_folder_that_the_lead_swaps_in(tmp_path, monkeypatch):
    from mrirecon.core import atomic

    monkeypatch.setenv(atomic.RUN_TOKEN_VARIABLE, "run-1")
    out = tmp_path / "out"
    with atomic.staged_folder(out) as lead:
        monkeypatch.setenv("LOCAL_RANK", "1")  # a process that Lightning's launcher started
        with atomic.staged_folder(out) as other:
            assert other == lead
            (other / "b.txt").write_text("from rank 1")
        assert lead.is_dir() and not out.exists()  # neither swapped in nor removed by rank 1
        monkeypatch.delenv("LOCAL_RANK")
        (lead / "a.txt").write_text("from rank 0")
        assert atomic.final_path(lead / "a.txt") == out / "a.txt"
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt"]
    assert not lead.exists() and atomic.final_path(lead / "a.txt") == lead / "a.txt"

    monkeypatch.delenv(atomic.RUN_TOKEN_VARIABLE)
    monkeypatch.setenv("RANK", "1")  # torchrun or another launcher, without a shared name
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    with pytest.raises(atomic.UserError, match=atomic.RUN_TOKEN_VARIABLE):
        with atomic.staged_folder(out):
            pass


def test_a_staging_folder_is_stale_once_no_process_holds_its_lock(tmp_path):
    from mrirecon.core import atomic

    live, stale = tmp_path / ".out.staging-live", tmp_path / ".out.staging-dead"
    live.mkdir(), stale.mkdir()
    held = atomic.FolderLock(live, "in use")  # another run, still writing
    with atomic.staged_folder(tmp_path / "out") as work:
        (work / "x").write_text("1")
    held.release()
    assert live.is_dir() and not stale.exists()
    assert (tmp_path / "out" / "x").read_text() == "1" and not (tmp_path / "out" / ".lock").exists()
