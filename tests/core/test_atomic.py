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


def test_a_write_that_fails_in_a_staged_output_names_the_final_path(tmp_path, monkeypatch):
    import errno
    import os

    from mrirecon.core import atomic
    from mrirecon.errors import UserError

    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "report"
    with pytest.raises(UserError) as refused:
        with staged_folder(out) as work:
            monkeypatch.setattr(os, "replace", disk_full)
            atomic.write_text(work / "split" / "report.md", "# table")
    assert str(refused.value).startswith(f"{out / 'split' / 'report.md'}: cannot write (disk full")
    assert ".staging-" not in str(refused.value)


def test_a_staged_output_replaces_links_and_entries_of_another_kind_but_not_what_links_point_to(tmp_path):
    out, elsewhere = tmp_path / "baseline", tmp_path / "other_disk"
    (elsewhere / "reconstructions").mkdir(parents=True)
    (elsewhere / "reconstructions" / "old.h5").write_text("old")
    out.mkdir()
    (out / "reconstructions").symlink_to(elsewhere / "reconstructions")  # moved to another disk by its user
    (out / "metrics.csv").mkdir()  # a folder where the new output has a file
    (out / "figures").write_text("a file where the new output has a folder")
    (out / "notes.txt").write_text("the user's own")
    with staged_folder(out) as work:
        (work / "reconstructions").mkdir()
        (work / "reconstructions" / "new.h5").write_text("new")
        (work / "metrics.csv").write_text("ssim")
        (work / "figures").mkdir()
    assert not (out / "reconstructions").is_symlink()
    assert [p.name for p in (out / "reconstructions").iterdir()] == ["new.h5"]
    assert (out / "metrics.csv").read_text() == "ssim" and (out / "figures").is_dir()
    assert (out / "notes.txt").read_text() == "the user's own"
    assert (elsewhere / "reconstructions" / "old.h5").read_text() == "old"
    assert sorted(p.name for p in out.iterdir()) == ["figures", "metrics.csv", "notes.txt", "reconstructions"]
