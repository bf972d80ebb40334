"""FileCheckpointStorage specifics: a torn write never loses the last complete checkpoint."""

from __future__ import annotations

from pathlib import Path

from hitl_core import FileCheckpointStorage, WorkflowCheckpoint


async def test_a_torn_write_falls_back_to_the_previous_checkpoint(tmp_path: Path) -> None:
    storage = FileCheckpointStorage(tmp_path)
    v1 = await storage.save(WorkflowCheckpoint(session_id="s", workflow="w", status="pending",
                                               metadata={"n": 1}), expected_version=None)
    v2 = await storage.save(WorkflowCheckpoint(session_id="s", workflow="w", status="pending",
                                               metadata={"n": 2}), expected_version=v1)
    newest = storage._slots("s")[int(v2) % 2]
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # the process died half-way through the write
    stored = await storage.load("s")
    assert stored is not None and stored.version == v1 and stored.checkpoint.metadata == {"n": 1}
    v3 = await storage.save(WorkflowCheckpoint(session_id="s", workflow="w", status="completed",
                                               metadata={"n": 3}), expected_version=v1)
    assert v3 == v2  # the torn slot is simply overwritten
    again = await storage.load("s")
    assert again is not None and again.checkpoint.metadata == {"n": 3}
    assert sorted(p.name for p in (tmp_path / "sessions").iterdir()) == ["s_s.0.json", "s_s.1.json"]
    await storage.close()


async def test_flipped_bits_are_caught_by_the_checksum(tmp_path: Path) -> None:
    storage = FileCheckpointStorage(tmp_path)
    v1 = await storage.save(WorkflowCheckpoint(session_id="s", workflow="w", metadata={"a": "x"}),
                            expected_version=None)
    await storage.save(WorkflowCheckpoint(session_id="s", workflow="w", metadata={"a": "y"}), expected_version=v1)
    slot = storage._slots("s")[0]  # version 2 lives in slot 0
    slot.write_bytes(slot.read_bytes().replace(b'"a":"y"', b'"a":"z"'))
    stored = await storage.load("s")
    assert stored is not None and stored.checkpoint.metadata == {"a": "x"}
    await storage.close()
