"""Named ``modal.Dict``s on the fake control plane, through the real modal 1.6.4 client."""

from __future__ import annotations

from collections.abc import Iterator

import modal
import modal.exception
import pytest

from scripts.fake_modal.control_plane import (
    TOKEN_ID,
    TOKEN_SECRET,
    FakeModalControlPlane,
    call_intervals,
    max_alive,
)

APP = "fake-dict-app"
FUNCTIONS = {f"{APP}/publish": "tests.fake_modal.dict_functions:publish"}


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeModalControlPlane]:
    with FakeModalControlPlane(FUNCTIONS, tmp_path_factory.mktemp("fake_dicts")) as plane:
        yield plane


@pytest.fixture(scope="module")
def client(plane: FakeModalControlPlane) -> Iterator[modal.Client]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODAL_SERVER_URL", plane.url)
        client = modal.Client.from_credentials(TOKEN_ID, TOKEN_SECRET)
    yield client
    client.close()


class TestNamedDicts:
    def test_put_get_contains_len_and_pop(self, client):
        board = modal.Dict.from_name("board-a", create_if_missing=True, client=client)

        board.put("runs/x/fold_000", {"step": 10, "line": "fold 0: step 10/20"})
        board["other"] = 3

        assert board.get("runs/x/fold_000") == {"step": 10, "line": "fold 0: step 10/20"}
        assert board.get("missing", "default") == "default"
        assert board.contains("other") and not board.contains("missing")
        assert board.len() == 2
        assert board.pop("other") == 3
        assert board.len() == 1

    def test_the_same_name_is_the_same_dict_for_every_client(self, plane, client):
        modal.Dict.from_name("board-b", create_if_missing=True, client=client).put("k", [1, 2])
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MODAL_SERVER_URL", plane.url)
            other = modal.Client.from_credentials(TOKEN_ID, TOKEN_SECRET)
        try:
            assert modal.Dict.from_name("board-b", client=other).get("k") == [1, 2]
        finally:
            other.close()

    def test_an_unknown_name_without_create_if_missing_is_not_found(self, client):
        with pytest.raises(modal.exception.NotFoundError, match="never-created"):
            modal.Dict.from_name("never-created", client=client).get("k")

    def test_put_with_skip_if_exists_keeps_the_first_value(self, client):
        board = modal.Dict.from_name("board-c", create_if_missing=True, client=client)

        assert board.put("slot", "first", skip_if_exists=True) is True
        assert board.put("slot", "second", skip_if_exists=True) is False
        assert board.get("slot") == "first"


class TestFunctionBodies:
    def test_a_body_publishes_with_its_own_client_and_a_test_client_reads_it(self, plane, client):
        fn = modal.Function.from_name(APP, "publish", client=client)

        assert fn.remote(dict_name="board-d", key="fold", value={"step": 3}) is True

        assert modal.Dict.from_name("board-d", client=client).get("fold") == {"step": 3}
        assert any(e["dict"] == "board-d" for e in plane.events("dict_put"))


class TestCallLog:
    def test_max_alive_counts_overlapping_calls_from_spawn_to_finish(self):
        events = [
            {"type": "spawn", "call_id": "a", "function": "f", "t": 0.0},
            {"type": "spawn", "call_id": "b", "function": "f", "t": 1.0},
            {"type": "finished", "call_id": "a", "t": 2.0},
            {"type": "spawn", "call_id": "c", "function": "f", "t": 2.0},  # starts as a ends: not 3
            {"type": "spawn", "call_id": "d", "function": "g", "t": 2.5},
            {"type": "finished", "call_id": "b", "t": 3.0},
        ]

        intervals = call_intervals(events, function="f")

        assert intervals == {"a": (0.0, 2.0), "b": (1.0, 3.0), "c": (2.0, float("inf"))}
        assert max_alive(intervals) == 2
        assert max_alive(call_intervals(events)) == 3
        assert max_alive(call_intervals(events, call_ids={"a"})) == 1
