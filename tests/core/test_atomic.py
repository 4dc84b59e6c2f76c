"""Failed commands leave no empty folders behind, and never remove what they did not create."""

import pytest

from mrirecon.core.atomic import check_writable_folder, first_missing_folder, remove_empty_folders, staged_folder


def test_the_folders_a_command_created_and_left_empty_are_taken_back_and_nothing_else(tmp_path):
    target = tmp_path / "new" / "deeper" / "out"
    created = first_missing_folder(target)
    assert created == tmp_path / "new"
    check_writable_folder(target)
    (target / "split").mkdir()
    remove_empty_folders(created)
    assert not (tmp_path / "new").exists()
    # A folder holding a file stays with the file; a folder that existed before stays.
    (tmp_path / "kept").mkdir()
    created = first_missing_folder(tmp_path / "kept" / "out" / "a")
    assert created == tmp_path / "kept" / "out"
    check_writable_folder(tmp_path / "kept" / "out" / "a")
    check_writable_folder(tmp_path / "kept" / "out" / "b")
    (tmp_path / "kept" / "out" / "b" / "result.csv").write_text("1")
    remove_empty_folders(created)
    assert (tmp_path / "kept" / "out" / "b" / "result.csv").read_text() == "1"
    assert not (tmp_path / "kept" / "out" / "a").exists()
    assert first_missing_folder(tmp_path / "kept") is None
    remove_empty_folders(None)
    assert (tmp_path / "kept").is_dir()


@pytest.mark.parametrize("failure", [KeyboardInterrupt, ValueError])
def test_a_staged_output_that_fails_leaves_no_folder_it_created(tmp_path, failure):
    (tmp_path / "existing").mkdir()
    for out in (tmp_path / "new" / "deeper" / "report", tmp_path / "existing" / "report"):
        with pytest.raises(failure):
            with staged_folder(out) as work:
                (work / "split").mkdir()
                (work / "split" / "metrics.csv").write_text("1")
                raise failure
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
    assert list((tmp_path / "existing").iterdir()) == []


def test_a_staged_output_that_succeeds_is_kept(tmp_path):
    with staged_folder(tmp_path / "new" / "out") as work:
        (work / "summary.json").write_text("{}")
    assert (tmp_path / "new" / "out" / "summary.json").read_text() == "{}"


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
