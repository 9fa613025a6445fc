"""The ownership record: atomic file, boot id, index+pid checks, and the foreign message."""

from __future__ import annotations

from pathlib import Path

from reactor.damon.ownership import (
    ForeignKdamond,
    OwnershipRecord,
    OwnershipStore,
    foreign_kdamonds,
    owned_indices,
)
from reactor.damon.probe import DamonSysfsStatus, KdamondInfo, choose_backend

BOOT = "b9058649-f337-4510-8a59-083c533cb9d6"


def _status(*kdamonds: tuple[int, str, int]) -> DamonSysfsStatus:
    infos = tuple(KdamondInfo(i, state, pid, "paddr") for i, state, pid in kdamonds)
    return DamonSysfsStatus(True, infos, f"{len(infos)} kdamond(s)")


def test_record_round_trips_through_the_run_dir(tmp_path: Path) -> None:
    """save then load gives the same record; the directory is created; no temp file stays."""
    store = OwnershipStore(tmp_path / "run")
    record = OwnershipRecord(BOOT).with_pid(1, 901).with_pid(0, -1)
    store.save(record)
    assert store.load(BOOT) == record
    assert [k.index for k in record.kdamonds] == [0, 1]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["damon-kdamonds.json"]


def test_record_of_another_boot_is_ignored_with_a_reason(tmp_path: Path) -> None:
    """A record whose boot id differs loads as empty, and says why."""
    store = OwnershipStore(tmp_path)
    store.save(OwnershipRecord("old-boot").with_pid(0, 77))
    assert store.load(BOOT) == OwnershipRecord(BOOT)
    assert store.ignored is not None and "earlier boot (old-boot" in store.ignored


def test_corrupt_record_is_ignored(tmp_path: Path) -> None:
    """A file that is not a record is ignored (nothing is owned), not trusted."""
    (tmp_path / "damon-kdamonds.json").write_text('{"version": 1, "boot_id": 3}')
    store = OwnershipStore(tmp_path)
    assert store.load(BOOT).kdamonds == ()
    assert store.ignored is not None and "not an ownership record" in store.ignored


def test_ownership_needs_index_and_pid() -> None:
    """Index listed at the same pid is owned; another pid or an unlisted index is foreign."""
    record = OwnershipRecord(BOOT).with_pid(0, 901).with_pid(1, -1).with_pid(2, 500)
    status = _status((0, "on", 901), (1, "off", -1), (2, "on", 777), (3, "on", 77))
    assert owned_indices(record, status) == {0, 1}
    assert [k.index for k in foreign_kdamonds(record, status)] == [2, 3]


def test_foreign_message_names_kdamond_pid_and_remedy() -> None:
    """The refusal names each foreign kdamond, its pid and state, and what the user can do."""
    record = OwnershipRecord(BOOT)
    foreign = foreign_kdamonds(record, _status((0, "on", 77)))
    err = ForeignKdamond(
        "/sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds",
        "laying out 1 kdamond(s)",
        foreign,
        record,
    )
    text = str(err)
    assert "kdamond 0 (state on, pid 77, ops paddr: not in reactor's ownership record)" in text
    assert "stop that user" in text and "set reactor.backend to native" in text
    assert err.foreign[0].pid == 77


def test_auto_backend_falls_back_to_native_beside_a_foreign_kdamond() -> None:
    """choose_backend: auto -> native naming the kdamond; damon -> unusable."""
    status = _status((0, "on", 77))
    auto = choose_backend("auto", status, owned_indices(OwnershipRecord(BOOT), status))
    assert auto.backend == "native" and auto.usable and "pid 77" in auto.reason
    assert not choose_backend("damon", status, ()).usable
    mine = OwnershipRecord(BOOT).with_pid(0, 77)
    assert choose_backend("auto", status, owned_indices(mine, status)).backend == "damon"


def test_a_listed_kdamond_that_stopped_by_itself_stays_reactors() -> None:
    """Reactor's kdamond that stopped (its target exited: pid -1, off) is still its own;
    one restarted by someone else (a new pid) is not."""
    record = OwnershipRecord(BOOT).with_pid(0, 4321).with_pid(1, 4322)
    status = _status((0, "off", -1), (1, "on", 999))
    assert owned_indices(record, status) == {0}
